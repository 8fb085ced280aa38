//! The API's refusals: [`ApiError`], a request that cannot be served with its status, and
//! the one place where an application error becomes a status (`From<AppError>`).
//!
//! Only the status, the message and what goes with them are decided here; how a refusal
//! is answered on each listener (a redirect to the owner on the game listener) is the
//! routes' ([`super::routes`]). Nothing here reads a request.

use crate::app::{AppError, FailureKind, PersistError};
use crate::model::GameError;
use crate::persistence::backup::BackupError;

/// A request that cannot be served, with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// The advertised URL of the daemon that owns the galaxy asked for (see the module
    /// doc of `routes`): the body names it, and on the game listener the answer redirects there.
    pub owner: Option<String>,
    /// Sent with the refusal (`Retry-After`).
    pub headers: Vec<(&'static str, String)>,
    /// The request's change was applied in memory though the answer is a refusal (a
    /// durable order whose commit failed): the body says so, so that it is not resent.
    pub applied: bool,
    /// The galaxy asked for is archived (`GWAR_ARCHIVE_RESTORE=explicit`): the body says
    /// `"archived": true`.
    pub archived: bool,
}

impl ApiError {
    pub(super) fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            owner: None,
            headers: Vec::new(),
            applied: false,
            archived: false,
        }
    }
}

/// Every application error's status, in one place.
impl From<AppError> for ApiError {
    fn from(error: AppError) -> ApiError {
        let status = match &error {
            AppError::BadName(_) | AppError::Config(_) => 400,
            AppError::UnknownGalaxy(_) | AppError::Archived(_) => 404,
            AppError::GalaxyExists(_) | AppError::AlreadyArchived(_) | AppError::NotArchived(_) => {
                409
            }
            AppError::TooManyGalaxies { .. } | AppError::OverBudget(_) => 422,
            AppError::Game(game) => match game {
                GameError::UnknownSystem { .. } | GameError::UnknownStructure(_) => 404,
                GameError::AlreadyBuilding { .. }
                | GameError::TickOutOfOrder { .. }
                | GameError::MaxLevel(_) => 409,
                GameError::NotEnoughResources { .. } => 422,
                GameError::TickOutOfRange(_) => 400,
            },
            // Changes dropped with galaxies another daemon took: final, so no retry
            // (which 503 invites) can save them; it conflicts with that daemon's ownership.
            AppError::Persistence(PersistError::Lost(_)) => 409,
            AppError::UnsavedTooOld { .. }
            | AppError::SavingStalled { .. }
            | AppError::Persistence(_)
            | AppError::DurabilityUnavailable { .. }
            | AppError::NotDurable { .. }
            | AppError::MemoryOnly
            | AppError::ArchiveUnavailable { .. }
            | AppError::Busy(_)
            | AppError::LeaseLapsed(_) => 503,
            // Kept as it is for an operator: no retry mends it.
            AppError::DamagedArchive { .. } => 500,
            // On the game listener a redirect to the owner (see the module doc).
            AppError::OwnedElsewhere { .. } => 409,
            AppError::NoDatabase
            | AppError::NoArchives
            | AppError::NoHistory
            | AppError::ServerBackup(_)
            | AppError::BackupInProgress
            | AppError::Backup(BackupError::InProgress { .. }) => 409,
            // A lock held elsewhere (another daemon's fence on a galaxy being taken) or a
            // server database out of reach: gone in a moment, so worth a retry.
            AppError::Store(store) if transient(store.kind) => 503,
            AppError::Store(_) | AppError::Backup(_) => 500,
        };
        if status >= 500 {
            log::warn!(target: crate::logging::ROUTES, "request failed: {error}");
        }
        let mut api_error = ApiError::new(status, error.to_string());
        match error {
            AppError::OwnedElsewhere { owner, .. } => api_error.owner = Some(owner.url),
            AppError::NotDurable { .. } => api_error.applied = true,
            // Renewals come every third of the lease, and fail over quickly.
            AppError::LeaseLapsed(_) | AppError::Busy(_) | AppError::ArchiveUnavailable { .. } => {
                api_error.headers.push(("Retry-After", "1".to_owned()))
            }
            AppError::Archived(_) => api_error.archived = true,
            AppError::Store(store) if transient(store.kind) => {
                api_error.headers.push(("Retry-After", "1".to_owned()))
            }
            _ => {}
        }
        api_error
    }
}

/// A store failure that passes by itself.
fn transient(kind: FailureKind) -> bool {
    matches!(kind, FailureKind::Busy | FailureKind::Unavailable)
}
