//! The pages' data: one resource type for every server function (issue 18).
//!
//! A `Resource<Result<T, AppError>>` per answer type `T` put a copy of
//! Leptos' resource code (its hydration, its `.await`, its signals) and of
//! server_fn's client into the WASM for each `T`. Here every page's resource
//! holds the answer's JSON text ([`RawValue`]: the page's serialised
//! resources are the same JSON as before, `{"Ok":…}`), fetched by one
//! client path (the server function's own path and arguments, as server_fn
//! posts them), and a [`Data<T>`] decodes it where the page awaits it.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::api::AppError;

type Raw = Result<Box<RawValue>, AppError>;

/// A page's data from server function `F`'s answer `T`.
pub struct Data<T> {
    res: Resource<Raw>,
    ty: PhantomData<fn() -> T>,
}

impl<T> Clone for Data<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Data<T> {}

impl<T: DeserializeOwned> Data<T> {
    /// Like `Resource::new(source, |s| server_fn(…))`: `call` makes the
    /// server function's arguments (its `#[server]` struct) from the source.
    pub fn new<S, F>(source: impl Fn() -> S + Send + Sync + 'static, call: impl Fn(S) -> F + Send + Sync + 'static) -> Self
    where
        S: PartialEq + Clone + Send + Sync + 'static,
        T: 'static,
        F: ServerFn<Error = AppError> + Serialize + Send + 'static,
        F::Output: Serialize,
    {
        let res = resource(
            Box::new(move || Key(Arc::new(source()))),
            Box::new(move |key: Key| match (*key.0).as_any().downcast_ref::<S>() {
                Some(s) => Box::pin(fetch(call(s.clone()))),
                None => Box::pin(async { Err(AppError::Internal) }),
            }),
        );
        Data { res, ty: PhantomData }
    }

    /// The answer, once it is there (for `Suspend`).
    pub async fn get(self) -> Result<T, AppError> {
        decode(self.res.await)
    }

    /// The answer if it is there, tracked (for effects).
    pub fn now(self) -> Option<Result<T, AppError>> {
        self.res.get().map(decode)
    }
}

/// A resource's source value, of whichever type, compared by value: every
/// page's resource is then the same `Resource` with the same closures, and
/// Leptos' resource code is in the WASM once, not once per page.
#[derive(Clone)]
struct Key(Arc<dyn AnyKey>);

trait AnyKey: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn same(&self, other: &dyn Any) -> bool;
}

impl<S: PartialEq + Send + Sync + 'static> AnyKey for S {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn same(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<S>() == Some(self)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        (*self.0).same((*other.0).as_any())
    }
}

type Source = Box<dyn Fn() -> Key + Send + Sync>;
type Fetch = Box<dyn Fn(Key) -> Pin<Box<dyn Future<Output = Raw> + Send>> + Send + Sync>;

fn resource(source: Source, fetch: Fetch) -> Resource<Raw> {
    Resource::new(source, fetch)
}

fn decode<T: DeserializeOwned>(raw: Raw) -> Result<T, AppError> {
    serde_json::from_str(raw?.get()).map_err(|e| AppError::Transport(e.to_string()))
}

/// Runs the server function: its body on the server, a `POST` from the
/// browser.
#[allow(clippy::manual_async_fn)]
fn fetch<F>(args: F) -> impl Future<Output = Raw> + Send + 'static
where
    F: ServerFn<Error = AppError> + Serialize + Send + 'static,
    F::Output: Serialize,
{
    #[cfg(feature = "ssr")]
    {
        async move {
            let out = args.run_body().await?;
            serde_json::to_string(&out).ok().and_then(|s| RawValue::from_string(s).ok()).ok_or(AppError::Internal)
        }
    }
    #[cfg(all(feature = "hydrate", not(feature = "ssr")))]
    {
        let body = serde_qs::to_string(&args);
        async move {
            let body = body.map_err(|e| AppError::Transport(e.to_string()))?;
            let text = crate::rpc::client::post(F::PATH, body).await?;
            RawValue::from_string(text).map_err(|e| AppError::Transport(e.to_string()))
        }
    }
    #[cfg(not(any(feature = "hydrate", feature = "ssr")))]
    {
        let _ = args;
        async { Err(AppError::Internal) }
    }
}
