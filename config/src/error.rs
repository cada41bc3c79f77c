//! Configuration errors as a user reads them: `file:line:column: field: what
//! is wrong; allowed: what would be accepted`.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line and column, when the YAML parser knows them.
    pub location: Option<Location>,
    /// Field path such as `sites[1].origin.addresses[0]`; empty for the whole
    /// document.
    pub path: String,
    /// What is wrong.
    pub problem: String,
    /// What would be accepted instead.
    pub allowed: String,
}

/// A 1-based position in a YAML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(loc) = self.location {
            write!(f, ":{}:{}", loc.line, loc.column)?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.problem)?;
        if !self.allowed.is_empty() {
            write!(f, "; allowed: {}", self.allowed)?;
        }
        Ok(())
    }
}

/// Every problem found in one load, in file order. A load either yields a
/// fully valid value or this, never a partly applied configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub(crate) fn single(
        file: &Path,
        problem: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            location: None,
            path: String::new(),
            problem: problem.into(),
            allowed: allowed.into(),
        }])
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
