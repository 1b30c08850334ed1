//! WASM entry point. cargo-leptos builds this crate for `wasm32-unknown-unknown`
//! and the server-rendered page calls `hydrate()` once the module is loaded.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(bindery_app::App);
}
