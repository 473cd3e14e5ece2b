#!/usr/bin/env python3
"""Hostile-request figures, gitd beside git daemon on the same repository.

Sends one protocol v2 fetch with a real want and N random `have` lines (the
have-flood of issue reports), and reports the server's peak and after-request
resident memory: gitd's from /proc (one process), git daemon's from the peak of
its upload-pack children (GNU time's maximum resident size of the subtree).

    bench/flood.py --gitd target/release/gitd --repo PATH.git [--haves 2000000]
"""
import argparse, os, random, shutil, socket, subprocess, sys, tempfile, time


def pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, timeout: float = 10) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def vm(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def flood(port: int, path: str, want: str, haves: int) -> tuple[float, int]:
    """One fetch; returns (seconds, bytes received)."""
    rng = random.Random(1)
    body = [pkt(f"git-upload-pack {path}\0host=localhost\0\0version=2\0".encode())]
    body += [pkt(b"command=fetch\n"), b"0001", pkt(f"want {want}\n".encode())]
    start = time.time()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"".join(body))
    batch = []
    for i in range(haves):
        batch.append(pkt(b"have %040x\n" % rng.getrandbits(160)))
        if len(batch) == 4096:
            s.sendall(b"".join(batch))
            batch = []
    batch += [pkt(b"done\n"), b"0000"]
    s.sendall(b"".join(batch))
    s.shutdown(socket.SHUT_WR)
    got = 0
    while True:
        d = s.recv(1 << 16)
        if not d:
            break
        got += len(d)
    s.close()
    return time.time() - start, got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gitd", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--haves", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    repo = os.path.abspath(a.repo)
    base, name = os.path.dirname(repo), "/" + os.path.basename(repo)
    want = subprocess.check_output(["git", "-C", repo, "rev-parse", "HEAD"], text=True).strip()

    port = free_port()
    gitd = subprocess.Popen([a.gitd, f"--base-path={base}", "--export-all", "--listen=127.0.0.1",
                             f"--port={port}", "--log-destination=none"])
    wait_port(port)
    print(f"gitd idle RSS before: {vm(gitd.pid, 'VmRSS:')} KiB")
    for r in range(a.rounds):
        secs, got = flood(port, name, want, a.haves)
        time.sleep(1)  # the trim runs when the connection has ended
        print(f"gitd round {r + 1}: {secs:.2f} s, {got} bytes, peak {vm(gitd.pid, 'VmHWM:')} KiB,"
              f" RSS after {vm(gitd.pid, 'VmRSS:')} KiB (anonymous {vm(gitd.pid, 'RssAnon:')} KiB)")
    gitd.terminate()
    gitd.wait()

    port = free_port()
    tmp = tempfile.mkdtemp()
    tf = os.path.join(tmp, "time")
    daemon = subprocess.Popen(["/usr/bin/time", "-v", "-o", tf, "git", "daemon", f"--base-path={base}",
                               "--export-all", "--listen=127.0.0.1", f"--port={port}"])
    wait_port(port)
    for r in range(a.rounds):
        secs, got = flood(port, name, want, a.haves)
        print(f"git daemon round {r + 1}: {secs:.2f} s, {got} bytes")
    # Stop git daemon itself (the child of time), so time reports.
    kids = subprocess.check_output(["pgrep", "-P", str(daemon.pid)], text=True).split()
    for k in kids:
        os.kill(int(k), 15)
    daemon.wait()
    peak = [l for l in open(tf) if "Maximum resident" in l]
    print(f"git daemon peak (largest process): {peak[0].split(':')[1].strip()} KiB")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
