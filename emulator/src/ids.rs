//! Generated identifiers: database ids, passwords, REST tokens and endpoint slugs, in the formats
//! the reference shows (§2.3).

use rand::Rng as _;
use rand::distr::Alphanumeric;
use rand::seq::IndexedRandom as _;

/// UUID v4, as `database_id` and `backup_id`.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// 32 lowercase hex characters, like `038a8e27c45e43068d5f186085399884`.
pub fn password() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn token(prefix: &str) -> String {
    let body: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(62)
        .map(char::from)
        .collect();
    format!("{prefix}{body}")
}

/// Full-access REST token (starts with `AX` like Upstash's).
pub fn rest_token() -> String {
    token("AX")
}

/// Read-only REST token (starts with `An` like the reference's examples).
pub fn read_only_rest_token() -> String {
    token("An")
}

const ADJECTIVES: &[&str] = &[
    "able", "brave", "calm", "clever", "cosmic", "crisp", "daring", "eager", "fancy", "fine",
    "gentle", "glad", "golden", "grand", "happy", "honest", "humble", "jolly", "keen", "kind",
    "lively", "lucky", "merry", "mighty", "noble", "polite", "proud", "quick", "quiet", "rapid",
    "sacred", "sharp", "shining", "smart", "sought", "steady", "sunny", "sure", "swift", "tender",
    "tidy", "united", "valued", "vital", "warm", "wise", "beloved", "saving", "fluent", "nearby",
];

const ANIMALS: &[&str] = &[
    "alpaca", "badger", "beagle", "bison", "bobcat", "buffalo", "camel", "caribou", "cheetah",
    "cobra", "condor", "cougar", "coyote", "crane", "dingo", "dolphin", "eagle", "egret", "falcon",
    "ferret", "finch", "gazelle", "gecko", "gibbon", "gopher", "heron", "ibex", "impala", "jackal",
    "jaguar", "koala", "lemur", "llama", "lynx", "macaw", "marmot", "mollusk", "moose", "ocelot",
    "osprey", "otter", "panda", "pelican", "puma", "quail", "raven", "salmon", "stallion", "tapir",
    "walrus",
];

/// `<adjective>-<animal>-<5 digits>`, like `beloved-stallion-58500`.
pub fn slug() -> String {
    let mut rng = rand::rng();
    format!(
        "{}-{}-{:05}",
        ADJECTIVES.choose(&mut rng).copied().unwrap_or("able"),
        ANIMALS.choose(&mut rng).copied().unwrap_or("otter"),
        rng.random_range(10_000..100_000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let p = password();
        assert_eq!(p.len(), 32);
        assert!(
            p.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert!(rest_token().starts_with("AX"));
        assert!(read_only_rest_token().starts_with("An"));
        let s = slug();
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2].len(), 5);
        assert!(uuid::Uuid::parse_str(&uuid()).is_ok());
    }
}
