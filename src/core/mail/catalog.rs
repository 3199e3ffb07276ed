//! The built-in texts of the four emails, per language: English, French and
//! German. Each is a subject and a plain-text body; the HTML part is made
//! from the body ([`super::template::Template::text_as_html`]). Operators
//! override or add languages with `EMAIL_LOCALES` and the per-email
//! settings (see [`super::EmailSettings::from_lookup`]).

use super::kind::EmailKind;

/// One language's texts, in [`EmailKind::ALL`] order.
pub(crate) struct BuiltIn {
    /// The language tag (normal form).
    pub tag: &'static str,
    /// Subjects.
    pub subjects: [&'static str; 4],
    /// Plain-text bodies.
    pub bodies: [&'static str; 4],
}

impl BuiltIn {
    pub(crate) fn subject(&self, kind: EmailKind) -> &'static str {
        self.subjects[kind.index()]
    }

    pub(crate) fn body(&self, kind: EmailKind) -> &'static str {
        self.bodies[kind.index()]
    }
}

/// Every built-in language.
pub(crate) const BUILT_IN: [BuiltIn; 3] = [
    BuiltIn {
        tag: "en",
        subjects: ["Your sign-in link", "Your sign-in code: {code}", "Reset your password", "Confirm your email address"],
        bodies: [
            "Hello,\n\nOpen this link to sign in as {email}:\n\n{link}\n\n\
             The link works once and expires soon. If you did not ask for it, you can ignore this email.\n",
            "Hello,\n\nYour sign-in code for {email} is:\n\n    {code}\n\n\
             It works once and expires soon. If you did not ask for it, you can ignore this email.\n",
            "Hello,\n\nSomeone asked to reset the password of {email}. To choose a new one, open:\n\n{link}\n\n\
             The link works once and expires soon. If it was not you, ignore this email: your password stays as it is.\n",
            "Hello,\n\nPlease confirm that {email} is your address by opening:\n\n{link}\n\n\
             Opened where you are signed in to this account, it keeps your password and sessions as they \
             are. Opened anywhere else, it makes the account yours afresh: any password, name and language \
             set on it are removed and every session signed out, so that nobody who set the account up before you keeps a way in; \
             you then sign in with a sign-in link or code, or choose a new password with a password reset. \
             If you did not sign up yourself, opening it makes the account yours; or ignore this email.\n",
        ],
    },
    BuiltIn {
        tag: "fr",
        subjects: [
            "Votre lien de connexion",
            "Votre code de connexion : {code}",
            "Réinitialisez votre mot de passe",
            "Confirmez votre adresse e-mail",
        ],
        bodies: [
            "Bonjour,\n\nOuvrez ce lien pour vous connecter en tant que {email} :\n\n{link}\n\n\
             Le lien ne fonctionne qu'une fois et expire bientôt. Si vous ne l'avez pas demandé, vous pouvez \
             ignorer cet e-mail.\n",
            "Bonjour,\n\nVotre code de connexion pour {email} est :\n\n    {code}\n\n\
             Il ne fonctionne qu'une fois et expire bientôt. Si vous ne l'avez pas demandé, vous pouvez ignorer \
             cet e-mail.\n",
            "Bonjour,\n\nQuelqu'un a demandé à réinitialiser le mot de passe de {email}. Pour en choisir un \
             nouveau, ouvrez :\n\n{link}\n\n\
             Le lien ne fonctionne qu'une fois et expire bientôt. Si ce n'était pas vous, ignorez cet e-mail : \
             votre mot de passe reste inchangé.\n",
            "Bonjour,\n\nVeuillez confirmer que {email} est bien votre adresse en ouvrant :\n\n{link}\n\n\
             Ouvert là où vous êtes connecté à ce compte, il laisse votre mot de passe et vos sessions tels \
             quels. Ouvert ailleurs, il vous rend le compte à neuf : mot de passe, nom et langue définis sont \
             supprimés et toutes les sessions sont fermées, afin que personne ayant créé le compte avant vous n'en garde \
             l'accès ; vous vous connectez ensuite avec un lien ou un code de connexion, ou choisissez un \
             nouveau mot de passe par une réinitialisation. Si vous ne vous êtes pas inscrit vous-même, \
             l'ouvrir vous donne le compte ; sinon, ignorez cet e-mail.\n",
        ],
    },
    BuiltIn {
        tag: "de",
        subjects: [
            "Ihr Anmeldelink",
            "Ihr Anmeldecode: {code}",
            "Setzen Sie Ihr Passwort zurück",
            "Bestätigen Sie Ihre E-Mail-Adresse",
        ],
        bodies: [
            "Hallo,\n\nöffnen Sie diesen Link, um sich als {email} anzumelden:\n\n{link}\n\n\
             Der Link funktioniert nur einmal und läuft bald ab. Falls Sie ihn nicht angefordert haben, können \
             Sie diese E-Mail ignorieren.\n",
            "Hallo,\n\nIhr Anmeldecode für {email} lautet:\n\n    {code}\n\n\
             Er funktioniert nur einmal und läuft bald ab. Falls Sie ihn nicht angefordert haben, können Sie \
             diese E-Mail ignorieren.\n",
            "Hallo,\n\njemand hat angefordert, das Passwort von {email} zurückzusetzen. Um ein neues zu wählen, \
             öffnen Sie:\n\n{link}\n\n\
             Der Link funktioniert nur einmal und läuft bald ab. Falls Sie das nicht waren, ignorieren Sie diese \
             E-Mail: Ihr Passwort bleibt unverändert.\n",
            "Hallo,\n\nbitte bestätigen Sie, dass {email} Ihre Adresse ist, indem Sie diesen Link öffnen:\n\n{link}\n\n\
             Dort geöffnet, wo Sie bei diesem Konto angemeldet sind, bleiben Ihr Passwort und Ihre Sitzungen, \
             wie sie sind. Anderswo geöffnet, macht er das Konto neu zu Ihrem: Gesetzte Passwörter, Namen und \
             Sprachen werden entfernt und jede Sitzung abgemeldet, damit niemand, der das Konto vor Ihnen eingerichtet hat, einen \
             Zugang behält; danach melden Sie sich mit einem Anmeldelink oder -code an oder wählen über das \
             Zurücksetzen ein neues Passwort. Wenn Sie sich nicht selbst registriert haben, macht das Öffnen das \
             Konto zu Ihrem; andernfalls ignorieren Sie diese E-Mail.\n",
        ],
    },
];

/// The built-in language with tag `tag` (normal form), if any.
pub(crate) fn built_in(tag: &str) -> Option<usize> {
    BUILT_IN.iter().position(|b| b.tag == tag)
}
