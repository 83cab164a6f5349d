//! The emulator helpers: the test account, team keys, read-only keys, lowered data limits and
//! archival, against the emulator binary.

use serde_json::json;
use testkit::emulator::{EMAIL, Emulator};

fn create_body(name: &str) -> serde_json::Value {
    json!({"database_name": name, "region": "global", "primary_region": "us-east-1", "plan": "free"})
}

#[tokio::test]
async fn team_and_read_only_keys_data_limits_and_archival() {
    let emu = Emulator::start().await;
    let (status, mine) = emu
        .developer_api(
            reqwest::Method::POST,
            "/v2/redis/database",
            Some(create_body("mine")),
        )
        .await;
    assert_eq!(status, 200, "{mine}");
    let id = mine["database_id"].as_str().unwrap().to_string();

    // A team key sees the team's databases, not the person's.
    let team = emu.add_team_key(EMAIL, "team-key", "Platform").await;
    let (status, shared) = emu
        .developer_api_as(
            EMAIL,
            "team-key",
            reqwest::Method::POST,
            "/v2/redis/database",
            Some(create_body("shared")),
        )
        .await;
    assert_eq!(status, 200, "{shared}");
    assert_eq!(shared["customer_id"], team.as_str());
    let (_, list) = emu
        .developer_api_as(
            EMAIL,
            "team-key",
            reqwest::Method::GET,
            "/v2/redis/databases",
            None,
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["database_name"], "shared");

    // A read-only key reads and is refused changes.
    emu.add_read_only_key(EMAIL, "ro-key").await;
    let (status, _) = emu
        .developer_api_as(
            EMAIL,
            "ro-key",
            reqwest::Method::GET,
            &format!("/v2/redis/database/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = emu
        .developer_api_as(
            EMAIL,
            "ro-key",
            reqwest::Method::DELETE,
            &format!("/v2/redis/database/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 403);
    assert!(
        body.as_str().unwrap().contains("Readonly API key"),
        "{body}"
    );

    // A lower data limit shows as the database's threshold.
    emu.set_data_limit(&id, Some(1 << 20)).await;
    let view = emu.database(&id).await.unwrap();
    assert_eq!(view["db_disk_threshold"], 1 << 20);
    assert!(view["read_only_password"].is_string());
    emu.set_data_limit(&id, None).await;
    assert_eq!(
        emu.database(&id).await.unwrap()["db_disk_threshold"],
        256 << 20
    );

    // Archival: gone from the Developer API, back after unarchiving.
    emu.archive_database(&id).await;
    let (status, _) = emu
        .developer_api(
            reqwest::Method::GET,
            &format!("/v2/redis/database/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(emu.database(&id).await.unwrap()["archived"], true);
    emu.unarchive_database(&id).await;
    let (status, _) = emu
        .developer_api(
            reqwest::Method::GET,
            &format!("/v2/redis/database/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
}
