//! Semantic checks after parsing: each finds every problem, not just the
//! first, and records it against a field path that the loader turns into a
//! line and column.

/// A problem found by a check, before it is given a file and position.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub path: String,
    pub problem: String,
    pub allowed: String,
}

#[derive(Debug, Default)]
pub(crate) struct Validator {
    pub findings: Vec<Finding>,
}

impl Validator {
    pub fn error(&mut self, path: &str, problem: impl Into<String>, allowed: impl Into<String>) {
        self.findings.push(Finding {
            path: path.to_string(),
            problem: problem.into(),
            allowed: allowed.into(),
        });
    }

    pub fn join(&self, parent: &str, child: &str) -> String {
        match (parent.is_empty(), child.starts_with('[')) {
            (true, _) => child.to_string(),
            (false, true) => format!("{parent}{child}"),
            (false, false) => format!("{parent}.{child}"),
        }
    }

    /// Records `value` as seen at `path`; reports it if an earlier field had it.
    pub fn unique<T: PartialEq + std::fmt::Display + Clone>(
        &mut self,
        seen: &mut Vec<(T, String)>,
        value: &T,
        path: &str,
        what: &str,
    ) {
        if let Some((_, first)) = seen.iter().find(|(v, _)| v == value) {
            let first = first.clone();
            self.error(
                path,
                format!("duplicate {what} {value} (first used at {first})"),
                format!("each {what} once"),
            );
        } else {
            seen.push((value.clone(), path.to_string()));
        }
    }
}
