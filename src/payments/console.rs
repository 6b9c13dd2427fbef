//! Console sessions: a staff API token exchanged for a short-lived session. The session keeps the
//! token's hash, and every request resolves it again, so a revoked token's sessions stop at once.
//! Agents' credentials never open the console.

use super::*;
use crate::domain::AuditKind;
use crate::ledger::sessions::{self, SessionRow};

/// How long a console session lives.
pub const SESSION_TTL_MS: i64 = 30 * 60 * 1000;

/// A new session: the secret for the cookie (never stored) and the CSRF token of its forms.
#[derive(Debug)]
pub struct ConsoleSession {
    pub secret: SecretString,
    pub csrf: String,
    pub principal: Principal,
}

impl Payments {
    /// Signs a staff member in with an API token; agents' credentials are refused.
    pub async fn start_console_session(&self, token: &str) -> Result<ConsoleSession> {
        let principal = self.authenticate(token).await?;
        if matches!(principal, Principal::Agent { .. }) {
            return Err(PaymentsError::Unauthenticated);
        }
        let now = self.now();
        let secret = new_secret_token("bsr_session");
        let csrf = new_secret_token("csrf");
        let mut tx = self.ledger.begin().await?;
        sessions::insert(
            &mut tx,
            &SessionRow {
                id_hash: tokens::token_hash(&secret),
                token_hash: tokens::token_hash(token),
                csrf: csrf.clone(),
                created_at: now,
                expires_at: now + SESSION_TTL_MS,
            },
        )
        .await?;
        audit::append(
            &mut tx,
            now,
            NewEvent {
                actor: principal.actor(),
                detail: serde_json::json!({"expires_in_ms": SESSION_TTL_MS}),
                ..NewEvent::of(AuditKind::ConsoleSignedIn)
            },
        )
        .await?;
        tx.commit().await?;
        Ok(ConsoleSession {
            secret: SecretString::from(secret),
            csrf,
            principal,
        })
    }

    /// The staff member behind a session cookie, and the session's CSRF token. An unknown or
    /// expired session, or one whose token was revoked since, is `Unauthenticated`.
    pub async fn console_session(&self, secret: &str) -> Result<(Principal, String)> {
        let session = sessions::get(self.ledger.pool(), &tokens::token_hash(secret))
            .await?
            .ok_or(PaymentsError::Unauthenticated)?;
        if session.expires_at <= self.now() {
            return Err(PaymentsError::Unauthenticated);
        }
        let principal = self.staff_by_token_hash(&session.token_hash).await?;
        Ok((principal, session.csrf))
    }

    /// Ends a session (sign-out).
    pub async fn end_console_session(&self, secret: &str) -> Result<()> {
        let now = self.now();
        let (principal, _) = self.console_session(secret).await?;
        let mut tx = self.ledger.begin().await?;
        if sessions::delete(&mut tx, &tokens::token_hash(secret)).await? {
            audit::append(
                &mut tx,
                now,
                NewEvent {
                    actor: principal.actor(),
                    detail: serde_json::json!({}),
                    ..NewEvent::of(AuditKind::ConsoleSignedOut)
                },
            )
            .await?;
        }
        tx.finish("a sign-out of a session already gone").await?;
        Ok(())
    }

    /// The staff principal of a token hash, if the token is still valid.
    async fn staff_by_token_hash(&self, hash: &str) -> Result<Principal> {
        if let Some(admin) = &self.admin_token {
            let admin_hash = tokens::token_hash(admin.expose_secret());
            if bool::from(subtle::ConstantTimeEq::ct_eq(
                admin_hash.as_bytes(),
                hash.as_bytes(),
            )) {
                return Ok(Principal::Staff {
                    role: Role::Admin,
                    token_id: None,
                });
            }
        }
        let token = tokens::find_token(self.ledger.pool(), hash)
            .await?
            .filter(|t| t.revoked_at.is_none())
            .ok_or(PaymentsError::Unauthenticated)?;
        let role = Role::parse(&token.role).ok_or(PaymentsError::Unauthenticated)?;
        Ok(Principal::Staff {
            role,
            token_id: Some(token.id),
        })
    }
}
