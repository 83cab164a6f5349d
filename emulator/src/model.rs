//! Wire types and the static facts of the Upstash Developer API: regions, plans and the exact JSON
//! shape of the Database and Backup objects (`reference/upstash-api.md` §2.3, §2.4, §5, §6).

use serde::Serialize;

/// AWS region codes accepted as a primary region (§5).
pub const AWS_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "sa-east-1",
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "ap-southeast-2",
    "af-south-1",
];

/// GCP region codes accepted as a primary region (§5).
pub const GCP_REGIONS: &[&str] = &["us-central1", "us-east4", "europe-west1", "asia-northeast1"];

/// Platform of a primary region code, or `None` when the code is unknown.
pub fn region_platform(region: &str) -> Option<&'static str> {
    if AWS_REGIONS.contains(&region) {
        Some("aws")
    } else if GCP_REGIONS.contains(&region) {
        Some("gcp")
    } else {
        None
    }
}

/// Read regions: the AWS codes without `af-south-1`, no GCP codes (OAS enum, §5).
pub fn is_valid_read_region(region: &str) -> bool {
    region != "af-south-1" && AWS_REGIONS.contains(&region)
}

const MB: u64 = 1024 * 1024;
const GB: u64 = 1024 * MB;
const TB: u64 = 1024 * GB;

/// One row of the plan table (§6).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// The `plan` / `plan_name` value.
    pub name: &'static str,
    /// The Database object's `type`.
    pub kind: &'static str,
    /// The Database object's `database_type` (human readable).
    pub display: &'static str,
    pub price_per_month: f64,
    pub max_data_size: u64,
    pub monthly_bandwidth: u64,
    pub max_commands_per_second: u64,
    pub max_request_size: u64,
    pub max_entry_size: u64,
}

pub const PLANS: &[Plan] = &[
    Plan {
        name: "free",
        kind: "free",
        display: "Free",
        price_per_month: 0.0,
        max_data_size: 256 * MB,
        monthly_bandwidth: 10 * GB,
        max_commands_per_second: 10_000,
        max_request_size: 10 * MB,
        max_entry_size: 100 * MB,
    },
    Plan {
        name: "payg",
        kind: "payg",
        display: "Pay as You Go",
        price_per_month: 0.0,
        max_data_size: 100 * GB,
        monthly_bandwidth: 200 * GB,
        max_commands_per_second: 10_000,
        max_request_size: 10 * MB,
        max_entry_size: 100 * MB,
    },
    Plan {
        name: "fixed_250mb",
        kind: "paid",
        display: "Fixed 250MB",
        price_per_month: 10.0,
        max_data_size: 250 * MB,
        monthly_bandwidth: 50 * GB,
        max_commands_per_second: 10_000,
        max_request_size: 10 * MB,
        max_entry_size: 100 * MB,
    },
    Plan {
        name: "fixed_1gb",
        kind: "paid",
        display: "Fixed 1GB",
        price_per_month: 20.0,
        max_data_size: GB,
        monthly_bandwidth: 100 * GB,
        max_commands_per_second: 10_000,
        max_request_size: 10 * MB,
        max_entry_size: 200 * MB,
    },
    Plan {
        name: "fixed_5gb",
        kind: "paid",
        display: "Fixed 5GB",
        price_per_month: 100.0,
        max_data_size: 5 * GB,
        monthly_bandwidth: 500 * GB,
        max_commands_per_second: 10_000,
        max_request_size: 20 * MB,
        max_entry_size: 300 * MB,
    },
    Plan {
        name: "fixed_10gb",
        kind: "paid",
        display: "Fixed 10GB",
        price_per_month: 200.0,
        max_data_size: 10 * GB,
        monthly_bandwidth: TB,
        max_commands_per_second: 10_000,
        max_request_size: 30 * MB,
        max_entry_size: 400 * MB,
    },
    Plan {
        name: "fixed_50gb",
        kind: "paid",
        display: "Fixed 50GB",
        price_per_month: 400.0,
        max_data_size: 50 * GB,
        monthly_bandwidth: 5 * TB,
        max_commands_per_second: 10_000,
        max_request_size: 50 * MB,
        max_entry_size: 500 * MB,
    },
    Plan {
        name: "fixed_100gb",
        kind: "paid",
        display: "Fixed 100GB",
        price_per_month: 800.0,
        max_data_size: 100 * GB,
        monthly_bandwidth: 10 * TB,
        max_commands_per_second: 16_000,
        max_request_size: 75 * MB,
        max_entry_size: GB,
    },
    Plan {
        name: "fixed_500gb",
        kind: "paid",
        display: "Fixed 500GB",
        price_per_month: 1500.0,
        max_data_size: 500 * GB,
        monthly_bandwidth: 20 * TB,
        max_commands_per_second: 16_000,
        max_request_size: 100 * MB,
        max_entry_size: 5 * GB,
    },
    // The legacy "Pro" plan family only exists as a `type` (`pro`) that the official CLI sends in
    // change-plan (`{"plan": "pro"}`); its limits are not documented, so it uses pay-as-you-go limits.
    Plan {
        name: "pro",
        kind: "pro",
        display: "Pro",
        price_per_month: 0.0,
        max_data_size: 100 * GB,
        monthly_bandwidth: 200 * GB,
        max_commands_per_second: 10_000,
        max_request_size: 10 * MB,
        max_entry_size: 100 * MB,
    },
];

/// Looks a plan up by its `plan`/`plan_name` value. `pro` is only accepted by change-plan (the CLI's
/// `type`-style values); `paid` maps to the smallest fixed plan.
pub fn plan_by_name(name: &str, allow_types: bool) -> Option<&'static Plan> {
    let name = if allow_types && name == "paid" {
        "fixed_250mb"
    } else {
        name
    };
    if name == "pro" && !allow_types {
        return None;
    }
    PLANS.iter().find(|p| p.name == name)
}

/// `db_request_limit` exactly as in the OLD get example: 2^63, which overflows i64 (trip-up 4).
pub const DB_REQUEST_LIMIT: u64 = 9_223_372_036_854_775_808;

/// camelCase object, as in the OAS schema (trip-up 4).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecurityAddons {
    pub ip_whitelisting: bool,
    pub vpc_peering: bool,
    pub private_link: bool,
    pub tls_mutual_auth: bool,
    pub encryption_at_rest: bool,
}

/// The Database object returned by get/list/create/rename/reset-password/enable-tls (§2.3).
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseWire {
    pub database_id: String,
    pub database_name: String,
    pub database_type: String,
    pub region: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub port: u16,
    pub creation_time: i64,
    pub state: String,
    pub password: String,
    pub user_email: String,
    pub customer_id: String,
    pub endpoint: String,
    pub tls: bool,
    pub rest_token: String,
    pub read_only_rest_token: String,
    pub eviction: bool,
    pub auto_upgrade: bool,
    pub consistent: bool,
    pub multizone: bool,
    pub prod_pack_enabled: bool,
    pub budget: i64,
    pub primary_region: String,
    pub primary_members: Vec<String>,
    pub all_members: Vec<String>,
    pub read_regions: Vec<String>,
    pub reserved_per_region_price: f64,
    pub next_daily_backup_time: i64,
    pub daily_backup_enabled: bool,
    pub modifying_state: String,
    pub db_max_clients: u64,
    pub db_max_request_size: u64,
    pub db_disk_threshold: u64,
    pub db_max_entry_size: u64,
    pub db_memory_threshold: u64,
    pub db_daily_bandwidth_limit: u64,
    pub db_max_commands_per_second: u64,
    pub db_request_limit: u64,
    pub db_resource_size: String,
    pub db_type: String,
    pub db_conn_idle_timeout: u64,
    pub db_lua_timeout: u64,
    pub db_lua_credits_per_min: u64,
    pub db_store_max_idle: u64,
    pub db_max_loads_per_sec: u64,
    /// String-typed boolean (trip-up 4).
    pub db_acl_enabled: String,
    /// String-typed boolean (trip-up 4).
    pub db_acl_default_user_status: String,
    pub db_eviction: bool,
    pub last_plan_upgrade_time: i64,
    pub replicas: u32,
    #[serde(rename = "securityAddons")]
    pub security_addons: SecurityAddons,
    /// String-typed boolean (trip-up 4).
    pub prometheus_enabled: String,
    pub allowed_ip_ranges: Vec<String>,
}

/// The Backup object of `list-backup` (§2.4).
#[derive(Debug, Clone, Serialize)]
pub struct BackupWire {
    pub database_id: String,
    pub customer_id: String,
    pub name: String,
    pub backup_id: String,
    pub creation_time: i64,
    pub state: String,
    pub backup_size: u64,
    pub daily_backup: String,
    pub hourly_backup: String,
    pub internal_backup_tag: String,
}

/// The masked value that `?credentials=hide` puts in place of every credential (OLD example).
pub const MASKED: &str = "***";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_limit_overflows_i64_and_serializes_exactly() {
        assert!(i64::try_from(DB_REQUEST_LIMIT).is_err());
        assert_eq!(
            serde_json::to_string(&DB_REQUEST_LIMIT).unwrap(),
            "9223372036854775808"
        );
    }

    #[test]
    fn plan_lookup() {
        assert_eq!(
            plan_by_name("payg", false).unwrap().max_data_size,
            107_374_182_400
        );
        assert_eq!(
            plan_by_name("free", false).unwrap().max_data_size,
            268_435_456
        );
        assert!(plan_by_name("pro", false).is_none());
        assert_eq!(plan_by_name("pro", true).unwrap().kind, "pro");
        assert_eq!(plan_by_name("paid", true).unwrap().name, "fixed_250mb");
        assert!(plan_by_name("paid", false).is_none());
        assert!(plan_by_name("gold", true).is_none());
    }

    #[test]
    fn regions() {
        assert_eq!(region_platform("us-east-1"), Some("aws"));
        assert_eq!(region_platform("europe-west1"), Some("gcp"));
        assert_eq!(region_platform("mars-1"), None);
        assert!(is_valid_read_region("eu-west-1"));
        assert!(!is_valid_read_region("af-south-1"));
        assert!(!is_valid_read_region("us-central1"));
    }
}
