//! Progress bars on stderr, only when a person is watching: hidden when stderr is not a terminal (CI,
//! pipes, tests), so output stays clean and the library functions can always take one.

use std::{io::IsTerminal, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

/// Whether bars are drawn.
pub fn visible() -> bool {
    std::io::stderr().is_terminal()
}

/// A spinner with a message, for work of unknown size (pages of events).
pub fn spinner() -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bar of `len` steps.
pub fn bar(len: u64) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// No bar at all (tests, scripts).
pub fn hidden() -> ProgressBar {
    ProgressBar::hidden()
}
