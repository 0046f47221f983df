//! The schema registry: the JSON Schema of each event type, versioned in `event_schemas`, compiled
//! once per version and cached.
//!
//! Registering a schema only ever adds a version, so the row count is a generation number: one
//! cheap `count(*)` per claimed batch tells whether anything changed, and a schema registered
//! (or fixed) while the validator runs is in force from the next batch on.

use std::{collections::HashMap, sync::Arc};

use event_model::{EventType, pii::Rules};
use eye_service::schemas::InForce;
use sqlx::PgConnection;

/// A compiled schema in force for a type.
pub struct Schema {
    pub version: i32,
    /// Compiled with its personal properties relaxed (`event_model::pii::relaxed`): the payload
    /// it checks is already redacted.
    pub validator: Result<jsonschema::Validator, String>,
    /// Its personal properties (`x-eye-pii`), redacted before the payload is checked or kept.
    pub pii: Rules,
}

#[derive(Default)]
pub struct Registry {
    generation: i64,
    schemas: HashMap<EventType, Arc<Schema>>,
}

/// The generation and the number of types (compiled validators have no useful `Debug`).
impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("generation", &self.generation)
            .field("types", &self.schemas.len())
            .finish()
    }
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("version", &self.version)
            .field("compiled", &self.validator.is_ok())
            .finish()
    }
}

impl Registry {
    /// Reloads the latest version of every type if the registry changed since the last load.
    pub async fn refresh(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let generation = eye_service::schemas::generation(&mut *conn).await?;
        if generation == self.generation {
            return Ok(());
        }
        let rows = eye_service::schemas::in_force(&mut *conn).await?;
        let mut schemas = HashMap::with_capacity(rows.len());
        for InForce { category, name, version, schema } in rows {
            let event_type = EventType::new(category, name);
            // Reuse what is already compiled for an unchanged version.
            let compiled = match self.schemas.remove(&event_type) {
                Some(existing) if existing.version == version => existing,
                _ => {
                    let pii = Rules::of(&schema);
                    let validator = pii.clone().and_then(|_| {
                        let relaxed = event_model::pii::relaxed(&schema);
                        jsonschema::validator_for(&relaxed).map_err(|e| e.to_string())
                    });
                    if let Err(error) = &validator {
                        tracing::error!(%event_type, version, %error, "registered schema does not compile");
                    }
                    Arc::new(Schema { version, validator, pii: pii.unwrap_or_default() })
                }
            };
            schemas.insert(event_type, compiled);
        }
        tracing::info!(types = schemas.len(), generation, "schema registry loaded");
        self.schemas = schemas;
        self.generation = generation;
        Ok(())
    }

    pub fn get(&self, event_type: &EventType) -> Option<Arc<Schema>> {
        self.schemas.get(event_type).cloned()
    }
}

/// Checks `data_json` against `schema`: `Err` names the offending fields (up to three).
pub fn validate(schema: &Schema, data_json: &str) -> Result<(), String> {
    let validator = schema
        .validator
        .as_ref()
        .map_err(|error| format!("schema version {} does not compile: {error}", schema.version))?;
    let instance: serde_json::Value =
        serde_json::from_str(data_json).map_err(|error| format!("payload is not JSON: {error}"))?;
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .take(3)
        .map(|error| {
            let path = error.instance_path().to_string();
            let path = if path.is_empty() { "/".to_owned() } else { path };
            format!("{path}: {error}")
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}
