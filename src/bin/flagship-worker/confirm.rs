//! Destructive commands: `--dry-run` shows what would change, and nothing
//! changes without a "yes" typed at a terminal or `--yes`.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;

/// The flags every destructive command takes.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct Destructive {
    /// Show what would change and how many jobs, and change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Go ahead without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

impl Destructive {
    /// Whether to go ahead and `what` (e.g. `retry 3 dead jobs of every
    /// queue`): yes with `--yes`; otherwise the answer typed at the
    /// terminal. Without a terminal it refuses, saying to pass `--yes`.
    pub(crate) fn confirm(&self, what: &str) -> bool {
        if self.yes {
            return true;
        }
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            eprintln!(
                "error: not going to {what} without confirmation, and stdin is not a terminal to ask on; \
                 pass --yes to go ahead (or --dry-run to see what would change)"
            );
            return false;
        }
        eprint!("{what}? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if stdin.lock().read_line(&mut answer).is_err() {
            return false;
        }
        let yes = matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes");
        if !yes {
            eprintln!("nothing changed");
        }
        yes
    }
}

/// `1 dead job`, `2 dead jobs`: `n` of `what`, plural right.
pub(crate) fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
