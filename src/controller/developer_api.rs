//! The part of Upstash's Developer API the reconciler uses, as a trait: [`UpstashApi`] (the
//! real client) implements it, and the pipeline's tests run the same code against an in-memory
//! double.

use std::future::Future;

use crate::upstash::{
    AuditLogEntry, CreateDatabase, Database, ListedDatabase, UpstashApi, UpstashError,
    types::Backup,
};

/// Result of a Developer API call.
pub type ApiResult<T> = Result<T, UpstashError>;

/// The Developer API calls of one account.
pub trait DeveloperApi: Send + Sync {
    /// Every database of the account (without credentials).
    fn list_databases(&self) -> impl Future<Output = ApiResult<Vec<ListedDatabase>>> + Send;
    /// One database with its credentials; `None` if it does not exist.
    fn get_database(&self, id: &str) -> impl Future<Output = ApiResult<Option<Database>>> + Send;
    /// Creates a database (never retried: a lost answer is resolved by looking).
    fn create_database(
        &self,
        request: &CreateDatabase,
    ) -> impl Future<Output = ApiResult<Database>> + Send;
    /// Deletes a database; `false` if it was already gone.
    fn delete_database(&self, id: &str) -> impl Future<Output = ApiResult<bool>> + Send;
    /// Resets the password and both REST tokens.
    fn reset_password(&self, id: &str) -> impl Future<Output = ApiResult<Database>> + Send;
    fn update_regions(
        &self,
        id: &str,
        read_regions: &[String],
    ) -> impl Future<Output = ApiResult<()>> + Send;
    fn change_plan(&self, id: &str, plan: &str) -> impl Future<Output = ApiResult<()>> + Send;
    fn update_budget(&self, id: &str, budget: i64) -> impl Future<Output = ApiResult<()>> + Send;
    fn set_eviction(&self, id: &str, on: bool) -> impl Future<Output = ApiResult<()>> + Send;
    fn set_auto_upgrade(&self, id: &str, on: bool) -> impl Future<Output = ApiResult<()>> + Send;
    fn set_prod_pack(&self, id: &str, on: bool) -> impl Future<Output = ApiResult<()>> + Send;
    fn update_allowlist(
        &self,
        id: &str,
        allowed_ips: &[String],
    ) -> impl Future<Output = ApiResult<()>> + Send;
    fn set_daily_backup(&self, id: &str, on: bool) -> impl Future<Output = ApiResult<()>> + Send;
    fn list_backups(&self, id: &str) -> impl Future<Output = ApiResult<Vec<Backup>>> + Send;
    /// Takes a backup named `name` (never retried: the caller looks for it by name).
    fn create_backup(&self, id: &str, name: &str) -> impl Future<Output = ApiResult<()>> + Send;
    /// Replaces the database's data with a backup (never retried).
    fn restore_backup(
        &self,
        id: &str,
        backup_id: &str,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    /// The account's audit log (who changed what, from where).
    fn audit_logs(&self) -> impl Future<Output = ApiResult<Vec<AuditLogEntry>>> + Send;
}

impl DeveloperApi for UpstashApi {
    async fn audit_logs(&self) -> ApiResult<Vec<AuditLogEntry>> {
        UpstashApi::audit_logs(self).await
    }
    async fn list_databases(&self) -> ApiResult<Vec<ListedDatabase>> {
        UpstashApi::list_databases(self).await
    }
    async fn get_database(&self, id: &str) -> ApiResult<Option<Database>> {
        UpstashApi::get_database(self, id).await
    }
    async fn create_database(&self, request: &CreateDatabase) -> ApiResult<Database> {
        UpstashApi::create_database(self, request).await
    }
    async fn delete_database(&self, id: &str) -> ApiResult<bool> {
        UpstashApi::delete_database(self, id).await
    }
    async fn reset_password(&self, id: &str) -> ApiResult<Database> {
        UpstashApi::reset_password(self, id).await
    }
    async fn update_regions(&self, id: &str, read_regions: &[String]) -> ApiResult<()> {
        UpstashApi::update_regions(self, id, read_regions).await
    }
    async fn change_plan(&self, id: &str, plan: &str) -> ApiResult<()> {
        UpstashApi::change_plan(self, id, plan).await
    }
    async fn update_budget(&self, id: &str, budget: i64) -> ApiResult<()> {
        UpstashApi::update_budget(self, id, budget).await
    }
    async fn set_eviction(&self, id: &str, on: bool) -> ApiResult<()> {
        UpstashApi::set_eviction(self, id, on).await
    }
    async fn set_auto_upgrade(&self, id: &str, on: bool) -> ApiResult<()> {
        UpstashApi::set_auto_upgrade(self, id, on).await
    }
    async fn set_prod_pack(&self, id: &str, on: bool) -> ApiResult<()> {
        UpstashApi::set_prod_pack(self, id, on).await
    }
    async fn update_allowlist(&self, id: &str, allowed_ips: &[String]) -> ApiResult<()> {
        UpstashApi::update_allowlist(self, id, allowed_ips).await
    }
    async fn set_daily_backup(&self, id: &str, on: bool) -> ApiResult<()> {
        UpstashApi::set_daily_backup(self, id, on).await
    }
    async fn list_backups(&self, id: &str) -> ApiResult<Vec<Backup>> {
        UpstashApi::list_backups(self, id).await
    }
    async fn create_backup(&self, id: &str, name: &str) -> ApiResult<()> {
        UpstashApi::create_backup(self, id, name).await
    }
    async fn restore_backup(&self, id: &str, backup_id: &str) -> ApiResult<()> {
        UpstashApi::restore_backup(self, id, backup_id).await
    }
}
