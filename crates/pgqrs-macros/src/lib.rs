//! Attribute macros for pgqrs durable workflows.
//!
//! ```ignore
//! use pgqrs_macros::{pgqrs_step, pgqrs_workflow};
//!
//! #[pgqrs_step]
//! async fn fetch(ctx: &pgqrs::Workflow, url: &str) -> Result<String, anyhow::Error> { … }
//!
//! #[pgqrs_step(max_attempts = 5, backoff_ms = 200, max_backoff_ms = 10_000)]
//! async fn flaky(ctx: &pgqrs::Workflow, n: u32) -> Result<u32, anyhow::Error> { … }
//!
//! #[pgqrs_workflow]
//! async fn pipeline(ctx: &pgqrs::Workflow, url: &str) -> Result<u32, anyhow::Error> {
//!     let page = fetch(ctx, url).await?;
//!     flaky(ctx, page.len() as u32).await
//! }
//! ```
//!
//! The first argument of every step and workflow is the run context (`&pgqrs::Workflow`).
//! Both must be `async fn`s returning `Result<T, E>` where `T` serializes to JSON and `E`
//! implements `pgqrs::StepError` (`anyhow::Error`, `pgqrs::BoxError` and `pgqrs::Error` do).
//!
//! * `#[pgqrs_step]` journals the step's output: on replay the body is skipped and the output
//!   returned. Options: `name = "…"` (default: the function name), `max_attempts = N` (attempts
//!   in all, the first included; default 1: no retry), `backoff_ms`, `max_backoff_ms` (exponential backoff with jitter), or
//!   `fixed_backoff_ms` for a fixed delay. With retries, the other arguments must be `Clone`
//!   (each attempt gets a copy).
//! * `#[pgqrs_workflow]` starts or resumes the run, executes the body and records its outcome;
//!   a finished run returns its stored outcome without running anything.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::{parse_macro_input, spanned::Spanned, FnArg, ItemFn, LitInt, LitStr, Pat};

/// Split a function's arguments into the context identifier and the other identifiers.
fn args(f: &ItemFn) -> syn::Result<(syn::Ident, Vec<syn::Ident>)> {
    if f.sig.asyncness.is_none() {
        return Err(syn::Error::new(
            f.sig.fn_token.span(),
            "pgqrs workflows and steps must be `async fn`",
        ));
    }
    let mut idents = Vec::new();
    for arg in &f.sig.inputs {
        match arg {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    "pgqrs workflows and steps are free functions; `self` is not supported",
                ))
            }
            FnArg::Typed(t) => match &*t.pat {
                Pat::Ident(p) => idents.push(p.ident.clone()),
                other => {
                    return Err(syn::Error::new(
                        other.span(),
                        "use a plain name for each argument (no patterns)",
                    ))
                }
            },
        }
    }
    if idents.is_empty() {
        return Err(syn::Error::new(
            f.sig.inputs.span(),
            "the first argument must be the run context: `ctx: &pgqrs::Workflow`",
        ));
    }
    let ctx = idents.remove(0);
    Ok((ctx, idents))
}

struct StepOpts {
    name: Option<String>,
    max_attempts: Option<u32>,
    backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    fixed_backoff_ms: Option<u64>,
}

fn parse_step_opts(attr: TokenStream) -> syn::Result<StepOpts> {
    let mut o = StepOpts {
        name: None,
        max_attempts: None,
        backoff_ms: None,
        max_backoff_ms: None,
        fixed_backoff_ms: None,
    };
    let parser = syn::meta::parser(|meta| {
        let int = |m: &syn::meta::ParseNestedMeta| -> syn::Result<u64> {
            m.value()?.parse::<LitInt>()?.base10_parse::<u64>()
        };
        if meta.path.is_ident("name") {
            o.name = Some(meta.value()?.parse::<LitStr>()?.value());
        } else if meta.path.is_ident("max_attempts") {
            let n = int(&meta)?;
            if n == 0 || n > u32::MAX as u64 {
                return Err(
                    meta.error("max_attempts counts every attempt, the first included: at least 1")
                );
            }
            o.max_attempts = Some(n as u32);
        } else if meta.path.is_ident("backoff_ms") {
            o.backoff_ms = Some(int(&meta)?);
        } else if meta.path.is_ident("max_backoff_ms") {
            o.max_backoff_ms = Some(int(&meta)?);
        } else if meta.path.is_ident("fixed_backoff_ms") {
            o.fixed_backoff_ms = Some(int(&meta)?);
        } else {
            return Err(meta.error(
                "unknown option; expected name, max_attempts, backoff_ms, max_backoff_ms or fixed_backoff_ms",
            ));
        }
        Ok(())
    });
    syn::parse::Parser::parse(parser, attr)?;
    Ok(o)
}

fn step_impl(attr: TokenStream, item: ItemFn) -> syn::Result<TokenStream2> {
    let opts = parse_step_opts(attr)?;
    let (ctx, others) = args(&item)?;
    let name = opts.name.unwrap_or_else(|| item.sig.ident.to_string());
    let body = &item.block;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let sig = &item.sig;
    let new_body = match opts.max_attempts {
        None | Some(1) if opts.fixed_backoff_ms.is_none() && opts.backoff_ms.is_none() => quote! {
            #ctx.step(#name, move || async move #body).await
        },
        _ => {
            let attempts = opts.max_attempts.unwrap_or(1);
            let policy = match opts.fixed_backoff_ms {
                Some(ms) => quote! {
                    ::pgqrs::RetryPolicy::fixed(#attempts, ::std::time::Duration::from_millis(#ms))
                },
                None => {
                    let base = opts.backoff_ms.unwrap_or(100);
                    let max = opts.max_backoff_ms.unwrap_or(60_000);
                    quote! {
                        ::pgqrs::RetryPolicy::exponential_jitter(
                            #attempts,
                            ::std::time::Duration::from_millis(#base),
                            ::std::time::Duration::from_millis(#max),
                        )
                    }
                }
            };
            quote! {
                #ctx.step_with_retry(#name, #policy, move || {
                    #( let #others = ::std::clone::Clone::clone(&#others); )*
                    async move #body
                }).await
            }
        }
    };
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #new_body
        }
    })
}

fn workflow_impl(attr: TokenStream, item: ItemFn) -> syn::Result<TokenStream2> {
    if !attr.is_empty() {
        return Err(syn::Error::new(
            TokenStream2::from(attr).span(),
            "#[pgqrs_workflow] takes no options; the run's name is given to create_workflow",
        ));
    }
    let (ctx, _) = args(&item)?;
    let body = &item.block;
    let attrs = &item.attrs;
    let vis = &item.vis;
    let sig = &item.sig;
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #ctx.run(move || async move #body).await
        }
    })
}

/// Make an `async fn(ctx: &pgqrs::Workflow, …) -> Result<T, E>` a journaled workflow step.
#[proc_macro_attribute]
pub fn pgqrs_step(attr: TokenStream, item: TokenStream) -> TokenStream {
    let f = parse_macro_input!(item as ItemFn);
    step_impl(attr, f)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}

/// Make an `async fn(ctx: &pgqrs::Workflow, …) -> Result<T, E>` a durable workflow.
#[proc_macro_attribute]
pub fn pgqrs_workflow(attr: TokenStream, item: TokenStream) -> TokenStream {
    let f = parse_macro_input!(item as ItemFn);
    workflow_impl(attr, f)
        .unwrap_or_else(|e| e.to_compile_error())
        .into()
}
