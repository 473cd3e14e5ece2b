//! Progress lines in git's format (`progress.c`), for side-band channel 2.
//!
//! git's client prints them as `remote: …` and redraws a line on `\r`, so a phase is
//! a series of `Title: counters\r` updates closed by `Title: counters, done.\n`.
//! Like git, a phase of known size updates when the percentage changes and one of
//! unknown size (a bare running count) at most once a second.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Chunk;

/// git's `SIGALRM` interval for progress updates.
const INTERVAL: Duration = Duration::from_secs(1);

/// One progress phase. Without a channel it only counts, so callers need not check
/// whether progress was asked for.
pub struct Meter {
    tx: Option<mpsc::Sender<Chunk>>,
    title: &'static str,
    total: Option<usize>,
    /// The last value set; `None` until the first one (git's `last_value == -1`:
    /// a phase that never counted anything prints no line at all).
    n: Option<usize>,
    last_percent: Option<usize>,
    next_update: Instant,
}

impl Meter {
    pub(crate) fn new(
        tx: Option<mpsc::Sender<Chunk>>,
        title: &'static str,
        total: Option<usize>,
    ) -> Self {
        Meter {
            tx,
            title,
            total,
            n: None,
            last_percent: None,
            next_update: Instant::now() + INTERVAL,
        }
    }

    /// The phase has reached `n`; draws an update if one is due.
    pub fn set(&mut self, n: usize) {
        self.n = Some(n);
        if self.tx.is_none() {
            return;
        }
        let now = Instant::now();
        let tick = now >= self.next_update;
        let percent = self.total.map(|t| percent(n, t));
        if tick || (percent.is_some() && percent != self.last_percent) {
            if tick {
                self.next_update = now + INTERVAL;
            }
            self.last_percent = percent;
            self.draw(n, "\r");
        }
    }

    /// One more item done.
    pub fn inc(&mut self) {
        self.set(self.n.map_or(1, |n| n + 1));
    }

    /// Close the phase with git's `, done.` line (nothing if it never counted).
    pub fn done(&mut self) {
        if let Some(n) = self.n.take() {
            self.draw(n, ", done.\n");
        }
    }

    fn draw(&self, n: usize, eol: &str) {
        let Some(tx) = &self.tx else { return };
        let counters = match self.total {
            Some(t) => format!("{:3}% ({n}/{t})", percent(n, t)),
            None => n.to_string(),
        };
        // A client that went away is noticed by the pack data, not here.
        let _ = tx.blocking_send(Chunk::Progress(format!("{}: {counters}{eol}", self.title)));
    }
}

fn percent(n: usize, total: usize) -> usize {
    (n * 100).checked_div(total).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(rx: &mut mpsc::Receiver<Chunk>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Chunk::Progress(line)) = rx.try_recv() {
            out.push(line);
        }
        out
    }

    #[test]
    fn known_total_updates_on_each_new_percentage() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut m = Meter::new(Some(tx), "Counting objects", Some(300));
        for _ in 0..4 {
            m.inc();
        }
        m.done();
        assert_eq!(
            lines(&mut rx),
            [
                "Counting objects:   0% (1/300)\r",
                "Counting objects:   1% (3/300)\r",
                "Counting objects:   1% (4/300), done.\n",
            ]
        );
    }

    #[test]
    fn unknown_total_updates_once_a_second() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut m = Meter::new(Some(tx), "Enumerating objects", None);
        m.set(5);
        assert!(lines(&mut rx).is_empty(), "not before the first second");
        m.next_update = Instant::now();
        m.set(7);
        m.set(8);
        m.done();
        assert_eq!(
            lines(&mut rx),
            [
                "Enumerating objects: 7\r",
                "Enumerating objects: 8, done.\n"
            ]
        );
    }

    #[test]
    fn a_phase_that_counted_nothing_prints_nothing() {
        let (tx, mut rx) = mpsc::channel(64);
        Meter::new(Some(tx), "Counting objects", Some(0)).done();
        assert!(lines(&mut rx).is_empty());
    }
}
