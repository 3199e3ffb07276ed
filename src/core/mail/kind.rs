//! Which email is sent for which `*_requested` event, and the names of
//! its settings.

/// The emails Portcullis sends, one per `*_requested` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailKind {
    /// `magic_link_requested`: a sign-in link.
    MagicLink,
    /// `email_otp_requested`: a sign-in code.
    EmailOtp,
    /// `password_reset_requested`: a password-reset link.
    PasswordReset,
    /// `email_verification_requested`: an address-confirmation link.
    EmailVerification,
}

impl EmailKind {
    /// Every kind.
    pub const ALL: [EmailKind; 4] = [Self::MagicLink, Self::EmailOtp, Self::PasswordReset, Self::EmailVerification];

    /// The `<KIND>` of its `EMAIL_SUBJECT_*` / `EMAIL_BODY_*` / `EMAIL_HTML_*` settings.
    pub fn setting_suffix(self) -> &'static str {
        match self {
            Self::MagicLink => "MAGIC_LINK",
            Self::EmailOtp => "EMAIL_OTP",
            Self::PasswordReset => "PASSWORD_RESET",
            Self::EmailVerification => "EMAIL_VERIFICATION",
        }
    }

    /// The setting holding the base URL of its link, if it carries a link.
    pub fn link_setting(self) -> Option<&'static str> {
        match self {
            Self::MagicLink => Some("MAGIC_LINK_URL"),
            Self::EmailOtp => None,
            Self::PasswordReset => Some("PASSWORD_RESET_URL"),
            Self::EmailVerification => Some("EMAIL_VERIFY_URL"),
        }
    }

    /// The event type it is sent for.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::MagicLink => "magic_link_requested",
            Self::EmailOtp => "email_otp_requested",
            Self::PasswordReset => "password_reset_requested",
            Self::EmailVerification => "email_verification_requested",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Self::MagicLink => 0,
            Self::EmailOtp => 1,
            Self::PasswordReset => 2,
            Self::EmailVerification => 3,
        }
    }
}
