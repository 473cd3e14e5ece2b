//! A private `systemd --user` manager for tests (placeholder, being written).
