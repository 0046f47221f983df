//! Rebuilds when a migration is added: `sqlx::migrate!` embeds the folder's files at compile
//! time, and without this Cargo does not notice a new file in it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
