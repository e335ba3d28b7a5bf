#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used, unsafe_code)] // a test fails loudly
//! End to end: runbooks/db-migration.yaml against a real PostgreSQL and a
//! local HTTP service. Applied when the smoke tests pass; restored from the
//! pg_dump backup when they fail.

mod common;

use common::http_server::{HttpServer, Reply};
use common::postgres::Postgres;
use common::Test;

/// The app under deploy: `/health`, and `/api/auth/register`, which syncs the
/// user into PostgreSQL (or answers 500 when `broken`).
struct App {
    url: String,
    _server: HttpServer,
}

impl App {
    fn start(db_url: String, broken: bool) -> App {
        let server = HttpServer::builder()
            .reply(
                "GET /health",
                Reply::status(200).json(r#"{"status":"healthy"}"#),
            )
            .handle("POST /api/auth/register", move |req| {
                register(&req.body, &db_url, broken)
            })
            .fallback(Reply::status(404).json("{}"))
            .start();
        App {
            url: server.base_url(),
            _server: server,
        }
    }
}

fn register(body: &str, db_url: &str, broken: bool) -> Reply {
    if broken {
        return Reply::status(500).json(r#"{"error":"user sync failed"}"#);
    }
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let email = v["email"].as_str().unwrap_or_default().replace('\'', "");
    let ok = std::process::Command::new("psql")
        .args(["--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!(
            "INSERT INTO users (email, synced) VALUES ('{email}', true)"
        ))
        .arg(db_url)
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Reply::status(201).json(r#"{"created":true}"#)
    } else {
        Reply::status(500).json(r#"{"error":"insert failed"}"#)
    }
}

const MIGRATION: &str = "ALTER TABLE users ADD COLUMN synced boolean NOT NULL DEFAULT false;\n\
CREATE TABLE reputation (user_id integer REFERENCES users(id), score integer NOT NULL);\n\
INSERT INTO reputation SELECT id, 100 FROM users;\n";

fn setup(pg: &Postgres, db: &str) -> String {
    let url = pg.database(db);
    pg.psql(
        db,
        "CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE NOT NULL)",
    );
    pg.psql(
        db,
        "INSERT INTO users (email) VALUES ('ada@example.test'), ('grace@example.test')",
    );
    url
}

fn run_migration(url: &str, app: &App) -> common::Output {
    Test::new()
        .repo_file("runbooks/db-migration.yaml")
        .file("migrations/up.sql", MIGRATION)
        .args(&[
            "run",
            "runbooks/db-migration.yaml",
            "--run-id",
            "migrate1",
            "--param",
            &format!("database_url={url}"),
            "--param",
            "deploy_tool=true",
            "--param",
            &format!("app_url={}", app.url),
            "--param",
            "check_sql=SELECT count(*) FROM reputation",
            "--report",
            "report.json",
        ])
        .run()
}

#[test]
fn migration_applies_and_smoke_tests_pass() {
    let pg = Postgres::start();
    let url = setup(&pg, "applied");
    let app = App::start(url.clone(), false);
    let out = run_migration(&url, &app).success();
    assert_eq!(pg.psql("applied", "SELECT count(*) FROM reputation"), "2");
    assert_eq!(
        pg.psql("applied", "SELECT count(*) FROM users WHERE synced"),
        "1",
        "the smoke user was synced"
    );
    let backups: Vec<_> = std::fs::read_dir(out.path().join("backups"))
        .unwrap()
        .collect();
    assert_eq!(backups.len(), 1, "one pg_dump backup was taken");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["status"], "succeeded");
}

#[test]
fn failed_smoke_test_restores_the_backup() {
    let pg = Postgres::start();
    let url = setup(&pg, "restored");
    let app = App::start(url.clone(), true);
    let out = run_migration(&url, &app).code(1);
    // The migration was applied, then undone from the backup.
    assert_eq!(
        pg.psql(
            "restored",
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'reputation'"
        ),
        "0",
        "{}",
        out.stdout
    );
    assert_eq!(
        pg.psql("restored", "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'synced'"),
        "0"
    );
    assert_eq!(
        pg.psql(
            "restored",
            "SELECT string_agg(email, ',' ORDER BY id) FROM users"
        ),
        "ada@example.test,grace@example.test"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["status"], "rolled_back");
    let migrate = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "migrate")
        .unwrap();
    assert_eq!(migrate["rollback"]["status"], "succeeded");
    let smoke = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "smoke_register")
        .unwrap();
    assert_eq!(smoke["status"], "failed");
}
