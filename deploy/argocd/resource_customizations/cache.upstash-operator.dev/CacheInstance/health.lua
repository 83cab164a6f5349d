-- Health of a CacheInstance (cache.upstash-operator.dev/v1alpha1).
--
-- The operator reports status.observedGeneration and metav1.Conditions; `Ready` summarises the
-- others (Provisioned, Synced, SecretReady, PolicyCompliant). Ready=False with reason
-- `Provisioning` means the database is being created; any other False reason (UpstashUnavailable,
-- UpstashUnauthorized, CredentialsMissing, AccountChanged, InvalidSpec, SecretConflict,
-- PolicyViolation, ...) needs attention and its message says why. Conditions and reasons:
-- src/controller/conditions.rs and src/controller/instance/ in the upstash-operator repository.
--
-- Written for Argo CD's default Lua environment: no `string` library.
local hs = {}

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted: the operator deletes or keeps the Upstash database as spec.deletionPolicy says"
  return hs
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the change"
  return hs
end

local ready = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

local message = ready.message
if message == nil or message == "" then
  message = ready.reason
end

if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" and ready.reason ~= "Provisioning" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = message
return hs
