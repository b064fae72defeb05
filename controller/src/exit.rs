//! Every exit code of `mlcanary`, in one table: each cause is a variant, [`Exit::code`] is the
//! table, and the help texts are printed from it.

/// Why `mlcanary` exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what was asked (every policy promoted, for `local` and `wait`).
    Done,
    /// A policy was rolled back (`local`, `wait`).
    RolledBack,
    /// The command does not apply to the rollout now, or the API server refused it.
    Refused,
    /// Failed for good: a write, Envoy that keeps dying, an I/O error.
    Failed,
    /// Bad usage or input (arguments, policy file, URL): nothing was applied.
    BadInput,
    /// `wait`: the policy's spec failed validation, or the wait timed out.
    NotFinished,
    /// The cluster or `--server` cannot be reached.
    Unreachable,
    /// No such policy.
    NotFound,
    /// `local`: another `mlcanary local` holds the `--workdir` lock; nothing was touched.
    Locked,
    /// Stopped by Ctrl-C / SIGTERM before every policy had ended.
    Interrupted,
}

impl Exit {
    /// The table.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::RolledBack | Exit::Refused | Exit::Failed => 1,
            Exit::BadInput | Exit::NotFinished => 2,
            Exit::Unreachable => 3,
            Exit::NotFound => 4,
            Exit::Locked => 5,
            Exit::Interrupted => 130,
        }
    }

    /// What a person reads in `--help`.
    pub const fn meaning(self) -> &'static str {
        match self {
            Exit::Done => "done (every policy promoted, for `local` and `wait`)",
            Exit::RolledBack => "a policy was rolled back (`local`, `wait`)",
            Exit::Refused => "refused: the command does not apply to the rollout now",
            Exit::Failed => "failed for good (a write, Envoy that keeps dying)",
            Exit::BadInput => "bad usage or input (arguments, policy file, URL): nothing applied",
            Exit::NotFinished => "`wait`: the spec failed validation, or the wait timed out",
            Exit::Unreachable => "cannot reach the cluster or the --server",
            Exit::NotFound => "no such policy",
            Exit::Locked => "`local`: another mlcanary local holds the --workdir lock",
            Exit::Interrupted => "interrupted (Ctrl-C / SIGTERM) before every policy ended",
        }
    }

    pub const ALL: [Exit; 10] = [
        Exit::Done,
        Exit::RolledBack,
        Exit::Refused,
        Exit::Failed,
        Exit::BadInput,
        Exit::NotFinished,
        Exit::Unreachable,
        Exit::NotFound,
        Exit::Locked,
        Exit::Interrupted,
    ];
}

/// The `--help` footer: every code and what it means.
pub fn help() -> String {
    let mut out = String::from("Exit codes:");
    for e in Exit::ALL {
        out.push_str(&format!("\n  {:>3}  {}", e.code(), e.meaning()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_documented_one() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 1, 1, 2, 2, 3, 4, 5, 130]);
        let h = help();
        assert!(h.starts_with("Exit codes:"));
        assert!(h.contains("  5  `local`: another mlcanary local"), "{h}");
        assert!(h.contains("130  interrupted"), "{h}");
    }
}
