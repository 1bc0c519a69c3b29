//! How a command ends, as the process exit status (SPEC.md: 0 all applied,
//! 1 finished with failed items, 2 usage or input error, 3 fatal). Each
//! command decides its `Exit` in one function from its typed outcome; the
//! number is written here and nowhere else.

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything applied (or the command did what it was asked).
    Ok = 0,
    /// Finished, but some items failed or drifted; what could be done is done.
    Partial = 1,
    /// The command line or the input is wrong; nothing was changed.
    Usage = 2,
    /// The command could not go on (I/O, corruption, the target); state is saved.
    Fatal = 3,
}

impl Exit {
    /// The process exit status.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The `Exit` of a code the sync library still returns as a number
    /// (`sync::Report::exit_code`, `sync::Error::exit_code`,
    /// `target::local::ReadError::exit_code`). A code outside 0–3 is not one
    /// SPEC.md defines: it is treated as fatal.
    pub const fn from_code(code: u8) -> Exit {
        match code {
            0 => Exit::Ok,
            1 => Exit::Partial,
            2 => Exit::Usage,
            _ => Exit::Fatal,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    #[test]
    fn exit_codes_are_the_ones_spec_documents() {
        assert_eq!(Exit::Ok.code(), 0);
        assert_eq!(Exit::Partial.code(), 1);
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(Exit::Fatal.code(), 3);
    }

    #[test]
    fn library_codes_map_back_to_the_same_exit_and_unknown_ones_are_fatal() {
        for e in [Exit::Ok, Exit::Partial, Exit::Usage, Exit::Fatal] {
            assert_eq!(Exit::from_code(e.code()), e);
        }
        assert_eq!(Exit::from_code(4), Exit::Fatal);
        assert_eq!(Exit::from_code(u8::MAX), Exit::Fatal);
    }
}
