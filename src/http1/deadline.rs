//! A connection's timeout clock, re-armed lazily.
//!
//! Registering a tokio timer that is due before every other timer unparks the I/O
//! driver: an eventfd write. A keep-alive connection that made a fresh `Sleep` for each
//! wait paid that syscall once per request whenever the timer wheel had emptied while
//! the app ran (every connection waiting on Python, none idle), which is the normal
//! state under load. Here one timer lives as long as the connection: moving the deadline
//! later is only recorded, and when the timer fires before the recorded deadline it
//! re-arms itself for it. Moving the deadline earlier re-arms at once.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::time::{Instant, Sleep};

pub struct Deadline {
    timer: Pin<Box<Sleep>>,
    /// When `timer` is set to fire.
    armed: Instant,
    /// When the deadline really is.
    due: Instant,
}

impl Deadline {
    pub fn new(due: Instant) -> Self {
        Deadline {
            timer: Box::pin(tokio::time::sleep_until(due)),
            armed: due,
            due,
        }
    }

    pub fn set(&mut self, due: Instant) {
        self.due = due;
        if due < self.armed {
            self.armed = due;
            self.timer.as_mut().reset(due);
        }
    }

    /// Ready once the current deadline has passed.
    pub fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            if self.due <= self.armed {
                return Poll::Ready(());
            }
            self.armed = self.due;
            self.timer.as_mut().reset(self.due);
        }
    }

    pub async fn elapsed(&mut self) {
        poll_fn(|cx| self.poll_elapsed(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_latest_deadline_set() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_secs(1));
        deadline.set(start + Duration::from_secs(3));
        deadline.elapsed().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_takes_effect_at_once() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_secs(5));
        deadline.set(start + Duration::from_secs(2));
        deadline.elapsed().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn can_be_used_again_after_it_fired() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_secs(1));
        deadline.elapsed().await;
        deadline.set(Instant::now() + Duration::from_secs(4));
        deadline.elapsed().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
    }
}
