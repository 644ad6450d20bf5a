//! The registry credential of an assignment: which one applies to the
//! container's image (its own, else its tenant's stored one for that
//! server), opened on its way to the host. A container meant to run whose
//! credential does not open (a key missing from this replica's keyring, a
//! tampered row) is held stopped, as one whose `secure_env` does not open.

use crate::secrets::Keyring;
use crate::store::registry_credentials::StepCredentials;
use crate::store::ContainerRow;
use skiff_proto as pb;

/// Adds the applying credential to `assignment` (built from `row`).
pub fn attach(
    assignment: &mut pb::Assignment,
    row: &ContainerRow,
    credentials: &StepCredentials,
    keyring: &Keyring,
) {
    if assignment.desired != pb::DesiredState::Running as i32 {
        return;
    }
    let Some(server) = skiff_core::registry::registry_of(&row.image) else {
        return;
    };
    let Some((owner, sealed)) = credentials.applying(row.id, row.tenant_id, &server) else {
        return;
    };
    match sealed.open(owner, keyring) {
        Ok(credential) => {
            if let Some(spec) = assignment.spec.as_mut() {
                spec.registry_credential = Some(credential);
            }
        }
        Err(err) => {
            tracing::error!(container = %row.id, %server, error = %err,
                "its registry credential does not open: its host keeps it stopped");
            assignment.desired = pb::DesiredState::Stopped as i32;
        }
    }
}
