//! `--user`/`--group`: give up root after binding the sockets, as git daemon does.

use std::ffi::CString;

/// Switch to `user` (and `group`, else the user's primary group) for good.
pub fn drop_to(user: &str, group: Option<&str>) -> Result<(), String> {
    let c_user = CString::new(user).map_err(|_| format!("invalid user name {user:?}"))?;
    // SAFETY: getpwnam/getgrnam results are read immediately, before any other call
    // that could overwrite their static buffers; we are still single-threaded here.
    unsafe {
        let pw = libc::getpwnam(c_user.as_ptr());
        if pw.is_null() {
            return Err(format!("user not found - {user}"));
        }
        let (uid, mut gid) = ((*pw).pw_uid, (*pw).pw_gid);
        if let Some(group) = group {
            let c_group =
                CString::new(group).map_err(|_| format!("invalid group name {group:?}"))?;
            let gr = libc::getgrnam(c_group.as_ptr());
            if gr.is_null() {
                return Err(format!("group not found - {group}"));
            }
            gid = (*gr).gr_gid;
        }
        if libc::initgroups(c_user.as_ptr(), gid) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(format!(
                "cannot switch to user {user}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
