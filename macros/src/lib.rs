//! `#[toro::main]`: marks the function the kernel calls once boot is done.
//!
//! Written on `proc_macro` alone (no `syn`/`quote`) so building an
//! application does not compile a parser: the attribute only needs the name
//! of the function it sits on.

use proc_macro::{Delimiter, Group, Ident, Punct, Spacing, Span, TokenStream, TokenTree};

/// Marks `fn main() -> T` (where `T: toro::Termination`, e.g. `()`, `i32`,
/// `Result<(), E: Debug>`) as the application's entry point. What it returns
/// becomes the exit status of the VM.
#[proc_macro_attribute]
pub fn main(attribute: TokenStream, item: TokenStream) -> TokenStream {
    if !attribute.is_empty() {
        return compile_error("#[toro::main] takes no arguments", Span::call_site());
    }
    let mut tokens = item.clone().into_iter();
    let mut name = None;
    while let Some(token) = tokens.next() {
        if let TokenTree::Ident(ident) = &token {
            if ident.to_string() == "fn" {
                if let Some(TokenTree::Ident(function)) = tokens.next() {
                    name = Some(function);
                }
                break;
            }
        }
    }
    let Some(name) = name else {
        return compile_error("#[toro::main] must be placed on a function", Span::call_site());
    };
    // The kernel calls `__toro_application_main` (declared `extern "Rust"`
    // in toro::application) after boot; it reports the exit status.
    let glue: TokenStream = format!(
        "#[doc(hidden)] #[unsafe(no_mangle)] \
         pub fn __toro_application_main() -> i32 {{ \
             ::toro::Termination::report({name}()) \
         }}"
    )
    .parse()
    .expect("glue code is valid Rust");
    // Kept out of line so backtraces name the application's `main`.
    let mut output: TokenStream = "#[inline(never)]".parse().expect("valid attribute");
    output.extend(item);
    output.extend(glue);
    output
}

fn compile_error(message: &str, span: Span) -> TokenStream {
    let mut literal = TokenStream::from(TokenTree::Literal(proc_macro::Literal::string(message)));
    literal = literal
        .into_iter()
        .map(|mut t| {
            t.set_span(span);
            t
        })
        .collect();
    [
        TokenTree::Ident(Ident::new("compile_error", span)),
        TokenTree::Punct(Punct::new('!', Spacing::Alone)),
        TokenTree::Group(Group::new(Delimiter::Parenthesis, literal)),
        TokenTree::Punct(Punct::new(';', Spacing::Alone)),
    ]
    .into_iter()
    .collect()
}
