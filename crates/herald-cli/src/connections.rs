//! `herald connections [USER]`: the fleet's connections, from the presence records in Redis (or
//! from a herald's `GET /api/connections` without `--redis`).

use clap::Args;
use herald_core::presence::connections_report;
use serde_json::Value as Json;

use crate::client::ApiOpts;
use crate::layer;
use crate::settings::{Backend, LayerOpts};

/// `herald connections [USER] [--json]`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ConnectionsArgs {
    /// List this user's connections (instance, address, since, groups); none = sockets and
    /// users per instance.
    pub(crate) user: Option<String>,
    #[command(flatten)]
    pub(crate) layer: LayerOpts,
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    /// Print the JSON report (the same as `GET /api/connections`).
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn run(args: ConnectionsArgs) -> anyhow::Result<()> {
    let report = if args.layer.backend() == Backend::Memory {
        args.api.connections(args.user.as_deref()).await?
    } else {
        let redis = layer::redis_layer(&args.layer, "connections need")?;
        connections_report(&*redis, args.user.as_deref()).await?
    };
    if args.json {
        println!("{report}");
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// `since` (Unix seconds) as UTC, to the second.
fn since_text(since: &Json) -> String {
    let secs = since.as_f64().unwrap_or(0.0);
    if secs <= 0.0 {
        return "-".to_owned();
    }
    chrono::DateTime::from_timestamp(secs as i64, 0).map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The human-readable table of a report.
fn table(report: &Json) -> String {
    let text = |v: &Json| v.as_str().unwrap_or("-").to_owned();
    let rows: Vec<Vec<String>> = if let Some(conns) = report["connections"].as_array() {
        let mut rows = vec![
            ["CONNECTION", "INSTANCE", "ADDRESS", "SINCE", "GROUPS"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for c in conns {
            let groups: Vec<String> = c["groups"]
                .as_array()
                .map(|g| g.iter().map(text).collect())
                .unwrap_or_default();
            rows.push(vec![
                text(&c["connection"]),
                text(&c["instance"]),
                text(&c["address"]),
                since_text(&c["since"]),
                groups.join(","),
            ]);
        }
        if conns.is_empty() {
            return format!("{} has no connection\n", text(&report["user"]));
        }
        rows
    } else {
        let mut rows = vec![["INSTANCE", "SOCKETS", "USERS"].map(str::to_owned).to_vec()];
        for i in report["instances"].as_array().into_iter().flatten() {
            rows.push(vec![
                text(&i["instance"]),
                i["sockets"].to_string(),
                i["users"].to_string(),
            ]);
        }
        rows.push(vec![
            "total".to_owned(),
            report["sockets"].to_string(),
            report["users"].to_string(),
        ]);
        rows
    };
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_total_the_instances() {
        let report = json!({"sockets": 3, "users": 2, "instances": [
            {"instance": "web-1:8700", "sockets": 1, "users": 1},
            {"instance": "web-2:8700", "sockets": 2, "users": 2},
        ]});
        assert_eq!(
            table(&report),
            "INSTANCE    SOCKETS  USERS\nweb-1:8700  1        1\nweb-2:8700  2        2\n\
             total       3        2\n"
        );
        let report = json!({"user": "alice", "count": 1, "connections": [{
            "connection": "specific.a!b", "instance": "web-1:8700", "address": null,
            "since": 0.0, "groups": ["user_alice", "task_1"]}]});
        assert_eq!(
            table(&report),
            "CONNECTION    INSTANCE    ADDRESS  SINCE  GROUPS\n\
             specific.a!b  web-1:8700  -        -      user_alice,task_1\n"
        );
        assert_eq!(
            table(&json!({"user": "bob", "count": 0, "connections": []})),
            "bob has no connection\n"
        );
        assert_eq!(since_text(&json!(1764500000.7)), "2025-11-30 10:53:20 UTC");
    }
}
