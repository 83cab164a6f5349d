//! One piece of due work for one instance: a sample (Upstash's stats, judged and reported) or a
//! probe round (the opt-in data-plane commands, recorded for the next sample).

use std::{sync::Arc, time::Instant};

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::reflector::ObjectRef};
use secrecy::SecretString;

use super::{
    Monitor, evaluate,
    figures::{self, Inputs, WriteCounters},
    probe::Outcome,
    report::{self, InstanceReport},
    schedule::Work,
};
use crate::{
    crd::CacheInstance,
    credentials::Binding,
    metrics::InstanceLabels,
    upstash::{Database, UpstashApi},
};

/// How long the cached database object (limits, data-plane token) is used before it is read
/// again.
const DB_REFRESH: std::time::Duration = std::time::Duration::from_secs(600);

fn unix_day(now: Timestamp) -> i64 {
    now.as_second().div_euclid(86_400)
}

fn data_plane(db: &Database) -> Option<(String, SecretString)> {
    if db.endpoint.is_empty() {
        return None;
    }
    Some((format!("https://{}", db.endpoint), db.rest_token.clone()?))
}

impl Monitor {
    /// Runs one piece of work and clears its in-flight mark.
    pub(super) async fn run_work(&self, id: u64, work: Work) {
        let result = match work {
            Work::Sample => self.sample(id).await,
            Work::Probe => self.probe(id).await,
        };
        if let Some(state) = self.table().states.get_mut(&id) {
            match work {
                Work::Sample => state.sampling = false,
                Work::Probe => state.probing = false,
            }
        }
        if let Err(e) = result {
            tracing::debug!(id, ?work, err = %e, "monitoring work failed");
        }
    }

    /// The latest version of the instance from the caches.
    fn latest(&self, key: &ObjectRef<CacheInstance>) -> Option<Arc<CacheInstance>> {
        self.instances.iter().find_map(|s| s.get(key))
    }

    /// The account-bound Developer API for `instance`, unless its account changed (the
    /// reconciler reports that; sampling with the wrong account would only add alerts).
    async fn bind(&self, instance: &CacheInstance) -> crate::Result<Option<UpstashApi>> {
        match self
            .ctx
            .credentials
            .bind(&self.ctx.upstash, instance)
            .await?
        {
            Binding::Bound(bound) => Ok(Some(bound.api)),
            Binding::AccountChanged(why) => {
                tracing::debug!(object = %instance.name_any(), reason = %why, "not sampled");
                Ok(None)
            }
        }
    }

    /// Whether the monitor has no copy of `instance`'s database and the reconciler's first read
    /// of it in this process is still waiting for its turn.
    fn waits_for_first_read(&self, id: u64, instance: &CacheInstance) -> bool {
        let has_copy = self.table().states.get(&id).is_some_and(|s| s.db.is_some());
        !has_copy && self.ctx.first_reads.deferred(instance)
    }

    /// The database object: cached, else the reconciler's recent read (a new database costs
    /// no extra call), else read from Upstash.
    async fn database(
        &self,
        id: u64,
        api: &UpstashApi,
        instance: &CacheInstance,
        database_id: &str,
    ) -> Option<Arc<Database>> {
        let (cached, had_db) = {
            let table = self.table();
            let state = table.states.get(&id)?;
            (
                state
                    .db
                    .clone()
                    .filter(|(db, at)| db.database_id == database_id && at.elapsed() < DB_REFRESH)
                    .map(|(db, _)| db),
                state.had_db,
            )
        };
        if cached.is_some() {
            return cached;
        }
        let (db, read_at) = match self
            .ctx
            .memory
            .peek_read(instance, database_id)
            .filter(|(_, age)| !had_db && *age < DB_REFRESH)
        {
            Some((db, age)) => (
                db,
                Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
            ),
            None => match api.get_database(database_id).await {
                Ok(Some(db)) => (Arc::new(db), Instant::now()),
                Ok(None) => return None,
                Err(e) => {
                    tracing::debug!(object = %instance.name_any(), err = %e, "database unavailable for monitoring");
                    return None;
                }
            },
        };
        if let Some(state) = self.table().states.get_mut(&id) {
            state.db = Some((db.clone(), read_at));
            state.had_db = true;
        }
        Some(db)
    }

    /// Reads Upstash's stats, judges every threshold and reports the outcome.
    async fn sample(&self, id: u64) -> crate::Result<()> {
        let Some((key, database_id)) = self.table().states.get(&id).map(|s| {
            (
                ObjectRef::from_obj(s.instance.as_ref()),
                s.database_id.clone(),
            )
        }) else {
            return Ok(());
        };
        let Some(instance) = self.latest(&key) else {
            return Ok(());
        };
        let Some(api) = self.bind(&instance).await? else {
            return Ok(());
        };
        // After a restart the reconciler reads a settled instance's database when its resync
        // is due (see `controller::startup`); until then a sample goes without it, with the
        // plan the status shows, instead of reading it ahead of that turn.
        let waiting = self.waits_for_first_read(id, &instance);
        let db = if waiting {
            None
        } else {
            self.database(id, &api, &instance, &database_id).await
        };
        let plan = match waiting {
            true => instance
                .status
                .as_ref()
                .and_then(|s| s.plan.as_deref())
                .and_then(|p| p.parse().ok())
                .or(instance.spec.plan),
            false => instance.spec.plan,
        };
        let stats = match api.stats(&database_id).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(object = %key, err = %e, "stats unavailable");
                None
            }
        };

        let now = Timestamp::now();
        let clock = self.now();
        let (judgement, figures) = {
            let mut table = self.table();
            let Some(state) = table.states.get_mut(&id) else {
                return Ok(());
            };
            let Some(thresholds) = state.thresholds.clone() else {
                return Ok(());
            };
            let counters = WriteCounters::read(stats.as_ref(), state.evicted_keys);
            let evictions = match (counters, state.counters) {
                (Some(now), Some(before)) => now.since(before),
                _ => None,
            };
            if counters.is_some() {
                state.counters = counters;
            }
            let inputs = Inputs {
                stats: stats.as_ref(),
                db: db.as_deref(),
                spec_plan: plan,
                budget_usd: instance.spec.budget,
                probe: thresholds.probe.map(|_| &state.probe),
                evictions,
            };
            let figures = figures::derive(&inputs, &thresholds, now);
            let judgement = evaluate::judge(&mut state.alerts, &figures, &thresholds, clock);
            let mut report = InstanceReport::new(
                &figures,
                &judgement.firing,
                state.probe_commands_on(unix_day(now)),
            );
            // The operator's ACL commands are not the application's either.
            let acl = crate::acl::client::commands_on(&database_id, unix_day(now));
            report.app_commands_today =
                report.app_commands_today.map(|a| (a - acl as f64).max(0.0));
            state.report = Some(report);
            (judgement, figures)
        };
        let labels = InstanceLabels {
            namespace: instance.namespace().unwrap_or_default(),
            name: instance.name_any(),
        };
        report::export_metrics(&self.ctx.metrics, &labels, &figures, judgement.firing.len());
        report::publish_transitions(&self.ctx, &instance, &judgement.transitions);
        if let Some(body) = report::status_update(
            &instance,
            &judgement.firing,
            &judgement.transitions,
            figures.cost.as_ref(),
            now,
        ) {
            report::write_status(&self.ctx, &instance, &body).await?;
            if !judgement.transitions.is_empty()
                && let Some(nudger) = &self.nudger
            {
                nudger.instance_changed(&instance);
            }
        }
        Ok(())
    }

    /// Sends one probe round through the data plane and records it.
    async fn probe(&self, id: u64) -> crate::Result<()> {
        let Some((key, database_id)) = self.table().states.get(&id).map(|s| {
            (
                ObjectRef::from_obj(s.instance.as_ref()),
                s.database_id.clone(),
            )
        }) else {
            return Ok(());
        };
        let Some(instance) = self.latest(&key) else {
            return Ok(());
        };
        if self.waits_for_first_read(id, &instance) {
            // The database (and its data-plane token) is read at the reconciler's turn.
            return Ok(());
        }
        let Some(api) = self.bind(&instance).await? else {
            return Ok(());
        };
        let Some((url, token)) = self
            .database(id, &api, &instance, &database_id)
            .await
            .as_deref()
            .and_then(data_plane)
        else {
            return Ok(());
        };
        let mut outcomes = self.prober.ping(&url, &token).await;
        let info = if outcomes.contains(&Outcome::Unauthorized) {
            None
        } else {
            let (outcome, info) = self.prober.info(&url, &token).await;
            outcomes.push(outcome);
            info
        };
        let sent = outcomes.len() as u64;
        self.ctx.metrics.monitor_probe_commands_total.inc_by(sent);
        let mut table = self.table();
        let Some(state) = table.states.get_mut(&id) else {
            return Ok(());
        };
        state.count_probe_commands(unix_day(Timestamp::now()), sent);
        if let Some(min_samples) = state
            .thresholds
            .as_ref()
            .and_then(|t| t.probe)
            .map(|p| p.min_samples)
        {
            state.probe.resize(min_samples);
        }
        if outcomes.contains(&Outcome::Unauthorized) {
            // Rotated since the cache was filled: refresh and probe again next round.
            state.db = None;
        }
        state.probe.record(&outcomes);
        if let Some(evicted) = info.and_then(|i| i.evicted_keys) {
            state.evicted_keys = Some(evicted);
        }
        Ok(())
    }
}
