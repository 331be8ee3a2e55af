//! Demo and video approvals. The decision is an ordinary row update: the triggers of
//! sql/004_triggers.sql see `status` become `approved` and emit `demo_completed` /
//! `video_completed` in this same transaction; `rejected` emits nothing.

use deadpool_postgres::Transaction;
use http::StatusCode;
use serde_json::json;

use crate::payload::Approval;
use crate::response::{Refusal, Reply};

const DECIDE_DEMO: &str = "UPDATE demo_sites SET approval_status = $2, status = $2, \
    reviewer = $3, review_notes = $4, reviewed_at = now(), updated_at = now() \
    WHERE id = $1 RETURNING lead_id::bigint";
const DECIDE_VIDEO: &str = "UPDATE videos SET approval_status = $2, status = $2, \
    reviewer = $3, review_notes = $4, reviewed_at = now(), updated_at = now() \
    WHERE id = $1 RETURNING lead_id::bigint";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    Demo,
    Video,
}

impl Asset {
    fn decide(self) -> &'static str {
        match self {
            Asset::Demo => DECIDE_DEMO,
            Asset::Video => DECIDE_VIDEO,
        }
    }
    fn table(self) -> &'static str {
        match self {
            Asset::Demo => "demo_sites",
            Asset::Video => "videos",
        }
    }
    fn id_key(self) -> &'static str {
        match self {
            Asset::Demo => "demo_id",
            Asset::Video => "video_id",
        }
    }
    fn title(self) -> &'static str {
        match self {
            Asset::Demo => "Demo",
            Asset::Video => "Video",
        }
    }
    /// What the approved asset leads to in the pipeline.
    fn next_step(self) -> &'static str {
        match self {
            Asset::Demo => "video_generation",
            Asset::Video => "email_outreach",
        }
    }
}

pub async fn apply(tx: &Transaction<'_>, asset: Asset, a: &Approval) -> Result<Reply, Refusal> {
    let decision = if a.approved { "approved" } else { "rejected" };
    let row = tx
        .query_opt(asset.decide(), &[&a.id, &decision, &a.reviewer, &a.notes])
        .await?
        .ok_or_else(|| {
            Refusal::not_found(format!("{} has no row with id {}", asset.table(), a.id))
        })?;
    let lead_id: Option<i64> = row.get(0);
    let (action, next_step, message) = if a.approved {
        (
            "continue",
            Some(asset.next_step()),
            format!(
                "{} approved, triggering {}",
                asset.title(),
                asset.next_step().replace('_', " ")
            ),
        )
    } else {
        (
            "stop",
            None,
            format!("{} rejected, stopping the pipeline", asset.title()),
        )
    };
    let mut body = json!({
        "status": decision,
        "lead_id": lead_id,
        "action": action,
        "next_step": next_step,
        "message": message,
    });
    if let Some(map) = body.as_object_mut() {
        map.insert(asset.id_key().into(), a.id.into());
    }
    Ok(Reply::json(StatusCode::OK, &body))
}
