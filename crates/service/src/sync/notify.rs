//! Reports: in the console, and by email through the SMTP relay when one
//! is configured.

use bindery_model::SyncSettings;

use crate::import::run_dto;
use crate::util::now_ms;
use crate::{Result, Service};

impl Service {
    pub(super) async fn notify_recipients(&self, id: i64, settings: &SyncSettings) {
        if settings.recipients.is_empty() {
            return;
        }
        let Ok(Some(run)) = self.store.get_run(id).await else { return };
        let run = run_dto(run);
        let c = &run.counts;
        let summary = format!(
            "Sync #{} of {} ({}): {}; {} created, {} updated, {} enabled, {} disabled, {} entries failed. {}",
            run.id,
            run.directory.label(),
            run.started_by,
            run.state,
            c.create,
            c.update,
            c.enable,
            c.disable,
            c.failed,
            c.notes.join(" ")
        );
        for r in &settings.recipients {
            if let Err(e) = self.notify(r, &format!("Sync #{} {}", run.id, run.state), &summary).await {
                tracing::warn!(recipient = %r, error = %e, "sync report not delivered");
            }
        }
    }
}

impl Service {
    /// A report for a user: always in the console; by email too when an
    /// SMTP relay is configured and the user has an address.
    pub(crate) async fn notify(&self, username: &str, subject: &str, body: &str) -> Result<()> {
        let Some(u) = self.store.find_user(&crate::util::username_key(username)).await? else { return Ok(()) };
        let email_status = match (&self.options.smtp, u.email.is_empty()) {
            (None, _) => String::new(),
            (Some(_), true) => "not sent: the user has no email address".into(),
            (Some(smtp), false) => match send_mail(smtp, &u.email, subject, body).await {
                Ok(()) => format!("sent to {}", u.email),
                Err(e) => format!("not sent: {e}"),
            },
        };
        self.store.insert_notification(u.id, subject, body, &email_status, now_ms()).await?;
        Ok(())
    }
}

async fn send_mail(smtp: &crate::SmtpOptions, to: &str, subject: &str, body: &str) -> std::result::Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let msg = Message::builder()
        .from(smtp.from.parse().map_err(|e| format!("invalid From address {}: {e}", smtp.from))?)
        .to(to.parse().map_err(|e| format!("invalid address {to}: {e}"))?)
        .subject(subject)
        .body(body.to_string())
        .map_err(|e| e.to_string())?;
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .timeout(Some(std::time::Duration::from_secs(10)))
        .build();
    match tokio::time::timeout(std::time::Duration::from_secs(15), mailer.send(msg)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("SMTP relay {}:{}: {e}", smtp.host, smtp.port)),
        Err(_) => Err(format!("SMTP relay {}:{} did not answer within 15 s", smtp.host, smtp.port)),
    }
}
