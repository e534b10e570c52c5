//! Procedural macros of the Warden driver SDK. Use them through `warden_driver_sdk`:
//! `#[functions]` on a driver's `impl` block and `#[derive(Schema)]` on the types its
//! functions and settings use.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::{
    Attribute, Data, DeriveInput, Expr, Fields, FnArg, GenericArgument, ImplItem, ItemImpl, Lit,
    Meta, Pat, PathArguments, ReturnType, Type, Visibility, parse_macro_input, spanned::Spanned,
};

/// Turn every `pub fn` of an `impl` block into a function the host can `exec`.
///
/// Each function's parameters and result get a JSON Schema derived from their Rust types
/// (which must implement `Schema`), its doc comment becomes its description, and
/// `#[level(support)]` or `#[level(admin)]` raises the access level it requires from the
/// default `user`. A function returns a serialisable value or a `Result` of one.
#[proc_macro_attribute]
pub fn functions(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(Span::call_site(), "#[functions] takes no arguments")
            .to_compile_error()
            .into();
    }
    let item = parse_macro_input!(item as ItemImpl);
    match expand_functions(item) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// Derive `Schema` (the compile-time JSON Schema) for a struct with named fields, a
/// newtype struct, or an enum whose variants carry no data. Doc comments become
/// descriptions; `#[serde(rename, rename_all, default, skip)]` are honoured.
///
/// `#[schema(secret)]` on a field marks it as a secret (a password, a token): its schema
/// carries `"writeOnly": true`, the standard JSON Schema annotation for values that are
/// set but never shown back, so the host and a reviewer can tell secrets from other
/// settings without a list kept elsewhere.
#[proc_macro_derive(Schema, attributes(serde, schema))]
pub fn derive_schema(item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as DeriveInput);
    match expand_schema(input) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

struct Function {
    ident: syn::Ident,
    name: String,
    description: String,
    level: String,
    params: Vec<(syn::Ident, Type)>,
    returns: Type,
    returns_result: bool,
}

fn expand_functions(mut item: ItemImpl) -> syn::Result<TokenStream2> {
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "#[functions] goes on an inherent impl block, not a trait impl",
        ));
    }
    let mut functions = Vec::new();
    for impl_item in &mut item.items {
        let ImplItem::Fn(method) = impl_item else {
            continue;
        };
        let level = take_level(&mut method.attrs)?;
        if !matches!(method.vis, Visibility::Public(_)) {
            if level.is_some() {
                return Err(syn::Error::new(
                    method.sig.ident.span(),
                    "#[level] only applies to `pub fn` functions",
                ));
            }
            continue;
        }
        functions.push(parse_function(method, level)?);
    }
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();

    let descriptors = functions.iter().map(function_descriptor);
    let arms = functions.iter().map(function_call_arm);

    Ok(quote! {
        #item

        impl #impl_generics ::warden_driver_sdk::Functions for #self_ty #where_clause {
            const FUNCTIONS: ::warden_driver_sdk::schema::Node =
                ::warden_driver_sdk::schema::Node::Seq(&[
                    ::warden_driver_sdk::schema::Node::Raw("["),
                    ::warden_driver_sdk::schema::Node::Items(&[#(#descriptors),*]),
                    ::warden_driver_sdk::schema::Node::Raw("]"),
                ]);

            fn call(
                &mut self,
                function: &str,
                args: &str,
            ) -> ::core::result::Result<::std::string::String, ::warden_driver_sdk::Error> {
                match function {
                    #(#arms)*
                    _ => {
                        ::core::result::Result::Err(
                            ::warden_driver_sdk::Error::UnknownFunction(function.to_string()),
                        )
                    }
                }
            }
        }
    })
}

fn parse_function(method: &syn::ImplItemFn, level: Option<String>) -> syn::Result<Function> {
    let sig = &method.sig;
    if sig.asyncness.is_some() || !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.span(),
            "driver functions are plain synchronous methods without generics",
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver)) if receiver.reference.is_some() => {}
        _ => {
            return Err(syn::Error::new(
                sig.ident.span(),
                "a driver function takes `&self` or `&mut self` first; make helpers private",
            ));
        }
    }
    let mut params = Vec::new();
    for input in inputs {
        let FnArg::Typed(typed) = input else {
            return Err(syn::Error::new(input.span(), "unexpected receiver"));
        };
        let Pat::Ident(pat) = typed.pat.as_ref() else {
            return Err(syn::Error::new(
                typed.pat.span(),
                "parameters of driver functions must be plain names; they become argument names",
            ));
        };
        // `r#type` is the argument `type`.
        let name = syn::Ident::new(&pat.ident.unraw().to_string(), pat.ident.span());
        params.push((name, (*typed.ty).clone()));
    }
    let (returns, returns_result) = match &sig.output {
        ReturnType::Default => (syn::parse_quote!(()), false),
        ReturnType::Type(_, ty) => match result_ok_type(ty) {
            Some(ok) => (ok, true),
            None => ((**ty).clone(), false),
        },
    };
    let name = sig.ident.to_string();
    Ok(Function {
        ident: sig.ident.clone(),
        name: name.strip_prefix("r#").unwrap_or(&name).to_string(),
        description: doc_text(&method.attrs),
        level: level.unwrap_or_else(|| "user".to_string()),
        params,
        returns,
        returns_result,
    })
}

/// `T` when `ty` is spelled `Result<T, …>` (any path ending in `Result`).
fn result_ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(ok) => Some(ok.clone()),
        _ => None,
    }
}

fn take_level(attrs: &mut Vec<Attribute>) -> syn::Result<Option<String>> {
    let mut level = None;
    let mut error = None;
    attrs.retain(|attr| {
        if !attr.path().is_ident("level") {
            return true;
        }
        match attr.parse_args::<syn::Ident>() {
            Ok(ident) if ["user", "support", "admin"].contains(&ident.to_string().as_str()) => {
                level = Some(ident.to_string());
            }
            Ok(ident) => {
                error = Some(syn::Error::new(
                    ident.span(),
                    "level must be one of `user`, `support`, `admin`",
                ));
            }
            Err(parse_error) => error = Some(parse_error),
        }
        false
    });
    match error {
        Some(error) => Err(error),
        None => Ok(level),
    }
}

fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(expr) => match &expr.lit {
                    Lit::Str(text) => Some(text.value().trim().to_string()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect();
    // Paragraphs keep their breaks; lines inside a paragraph are joined with spaces.
    let mut text = String::new();
    for line in lines {
        if line.is_empty() {
            if !text.is_empty() && !text.ends_with("\n\n") {
                text.push_str("\n\n");
            }
        } else {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push(' ');
            }
            text.push_str(&line);
        }
    }
    text.trim_end().to_string()
}

fn function_descriptor(function: &Function) -> TokenStream2 {
    let name = &function.name;
    let description = &function.description;
    let level_json = format!(r#","level":"{}","params":"#, function.level);
    let properties = function.params.iter().map(|(ident, ty)| {
        let key = ident.to_string();
        quote! {
            ::warden_driver_sdk::schema::Node::Seq(&[
                ::warden_driver_sdk::schema::Node::Str(#key),
                ::warden_driver_sdk::schema::Node::Raw(":"),
                <#ty as ::warden_driver_sdk::schema::Schema>::SCHEMA,
            ])
        }
    });
    let required = function.params.iter().map(|(ident, ty)| {
        let key = ident.to_string();
        quote! {
            ::warden_driver_sdk::schema::Node::When(
                !<#ty as ::warden_driver_sdk::schema::Schema>::OPTIONAL,
                &::warden_driver_sdk::schema::Node::Str(#key),
            )
        }
    });
    let order = function.params.iter().map(|(ident, _)| {
        let key = ident.to_string();
        quote!(::warden_driver_sdk::schema::Node::Str(#key))
    });
    let returns = &function.returns;
    quote! {
        ::warden_driver_sdk::schema::Node::Seq(&[
            ::warden_driver_sdk::schema::Node::Raw(r#"{"name":"#),
            ::warden_driver_sdk::schema::Node::Str(#name),
            ::warden_driver_sdk::schema::Node::Raw(r#","description":"#),
            ::warden_driver_sdk::schema::Node::Str(#description),
            ::warden_driver_sdk::schema::Node::Raw(#level_json),
            ::warden_driver_sdk::schema::Node::Raw(r#"{"type":"object","properties":{"#),
            ::warden_driver_sdk::schema::Node::Items(&[#(#properties),*]),
            ::warden_driver_sdk::schema::Node::Raw(r#"},"required":["#),
            ::warden_driver_sdk::schema::Node::Items(&[#(#required),*]),
            ::warden_driver_sdk::schema::Node::Raw(r#"],"x-order":["#),
            ::warden_driver_sdk::schema::Node::Items(&[#(#order),*]),
            ::warden_driver_sdk::schema::Node::Raw(r#"],"additionalProperties":false},"returns":"#),
            <#returns as ::warden_driver_sdk::schema::Schema>::SCHEMA,
            ::warden_driver_sdk::schema::Node::Raw("}"),
        ])
    }
}

fn function_call_arm(function: &Function) -> TokenStream2 {
    let name = &function.name;
    let ident = &function.ident;
    let keys: Vec<String> = function.params.iter().map(|(p, _)| p.to_string()).collect();
    let bindings: Vec<syn::Ident> = (0..function.params.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect();
    let takes = function
        .params
        .iter()
        .zip(&bindings)
        .enumerate()
        .map(|(index, ((param, ty), binding))| {
            let key = param.to_string();
            quote! {
                let #binding: #ty = ::warden_driver_sdk::__private::take_arg(&mut __args, #index, #key)?;
            }
        });
    let call = if function.returns_result {
        quote!(self.#ident(#(#bindings),*).map_err(::core::convert::Into::<::warden_driver_sdk::Error>::into)?)
    } else {
        quote!(self.#ident(#(#bindings),*))
    };
    quote! {
        #name => {
            let mut __args = ::warden_driver_sdk::__private::parse_args(args, &[#(#keys),*])?;
            #(#takes)*
            let __value = #call;
            ::warden_driver_sdk::__private::result_json(&__value)
        }
    }
}

fn expand_schema(input: DeriveInput) -> syn::Result<TokenStream2> {
    let ident = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let serde = SerdeAttrs::parse(&input.attrs)?;
    SchemaAttrs::refuse(&input.attrs)?;
    let body = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(fields) => {
                let mut properties = Vec::new();
                let mut required = Vec::new();
                for field in &fields.named {
                    let field_serde = SerdeAttrs::parse(&field.attrs)?;
                    if field_serde.skip {
                        continue;
                    }
                    let Some(field_ident) = &field.ident else {
                        continue;
                    };
                    let raw = field_ident.to_string();
                    let raw = raw.strip_prefix("r#").unwrap_or(&raw);
                    let key = field_serde
                        .rename
                        .clone()
                        .unwrap_or_else(|| rename(raw, serde.rename_all.as_deref()));
                    let ty = &field.ty;
                    let mut schema = quote!(<#ty as ::warden_driver_sdk::schema::Schema>::SCHEMA);
                    if SchemaAttrs::parse(&field.attrs)?.secret {
                        schema = quote!(::warden_driver_sdk::schema::Node::Annotated(
                            r#""writeOnly":true"#,
                            &#schema,
                        ));
                    }
                    let doc = doc_text(&field.attrs);
                    if !doc.is_empty() {
                        schema = quote!(::warden_driver_sdk::schema::Node::Described(
                            #doc,
                            &#schema,
                        ));
                    }
                    properties.push(quote! {
                        ::warden_driver_sdk::schema::Node::Seq(&[
                            ::warden_driver_sdk::schema::Node::Str(#key),
                            ::warden_driver_sdk::schema::Node::Raw(":"),
                            #schema,
                        ])
                    });
                    let has_default = serde.default || field_serde.default;
                    required.push(quote! {
                        ::warden_driver_sdk::schema::Node::When(
                            !#has_default && !<#ty as ::warden_driver_sdk::schema::Schema>::OPTIONAL,
                            &::warden_driver_sdk::schema::Node::Str(#key),
                        )
                    });
                }
                quote! {
                    ::warden_driver_sdk::schema::Node::Seq(&[
                        ::warden_driver_sdk::schema::Node::Raw(r#"{"type":"object","properties":{"#),
                        ::warden_driver_sdk::schema::Node::Items(&[#(#properties),*]),
                        ::warden_driver_sdk::schema::Node::Raw(r#"},"required":["#),
                        ::warden_driver_sdk::schema::Node::Items(&[#(#required),*]),
                        ::warden_driver_sdk::schema::Node::Raw("]}"),
                    ])
                }
            }
            Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
                for field in &fields.unnamed {
                    SchemaAttrs::refuse(&field.attrs)?;
                }
                let ty = fields.unnamed.first().map(|field| &field.ty);
                quote!(<#ty as ::warden_driver_sdk::schema::Schema>::SCHEMA)
            }
            _ => {
                return Err(syn::Error::new(
                    ident.span(),
                    "Schema can be derived for structs with named fields and newtypes",
                ));
            }
        },
        Data::Enum(data) => {
            let mut names = Vec::new();
            for variant in &data.variants {
                if !matches!(variant.fields, Fields::Unit) {
                    return Err(syn::Error::new(
                        variant.span(),
                        "Schema can be derived for enums whose variants carry no data",
                    ));
                }
                SchemaAttrs::refuse(&variant.attrs)?;
                let variant_serde = SerdeAttrs::parse(&variant.attrs)?;
                if variant_serde.skip {
                    continue;
                }
                let key = variant_serde.rename.clone().unwrap_or_else(|| {
                    rename(&variant.ident.to_string(), serde.rename_all.as_deref())
                });
                names.push(quote!(::warden_driver_sdk::schema::Node::Str(#key)));
            }
            quote! {
                ::warden_driver_sdk::schema::Node::Seq(&[
                    ::warden_driver_sdk::schema::Node::Raw(r#"{"type":"string","enum":["#),
                    ::warden_driver_sdk::schema::Node::Items(&[#(#names),*]),
                    ::warden_driver_sdk::schema::Node::Raw("]}"),
                ])
            }
        }
        Data::Union(_) => {
            return Err(syn::Error::new(
                ident.span(),
                "Schema cannot be derived for unions",
            ));
        }
    };
    let doc = doc_text(&input.attrs);
    let body = if doc.is_empty() {
        body
    } else {
        quote!(::warden_driver_sdk::schema::Node::Described(#doc, &#body))
    };
    Ok(quote! {
        impl #impl_generics ::warden_driver_sdk::schema::Schema for #ident #type_generics #where_clause {
            const SCHEMA: ::warden_driver_sdk::schema::Node = #body;
        }
    })
}

/// The derive's own field options: `#[schema(secret)]`.
#[derive(Default)]
struct SchemaAttrs {
    secret: bool,
}

impl SchemaAttrs {
    fn parse(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut parsed = SchemaAttrs::default();
        for attr in attrs.iter().filter(|attr| attr.path().is_ident("schema")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("secret") {
                    parsed.secret = true;
                    Ok(())
                } else {
                    Err(meta.error("unknown schema option; the one option is `secret`"))
                }
            })?;
        }
        Ok(parsed)
    }

    /// `#[schema(...)]` describes a setting, so it belongs on a named field: a secret
    /// newtype would hide the mark inside `anyOf` when wrapped in an `Option`.
    fn refuse(attrs: &[Attribute]) -> syn::Result<()> {
        match attrs.iter().find(|attr| attr.path().is_ident("schema")) {
            Some(attr) => Err(syn::Error::new(
                attr.span(),
                "#[schema(...)] goes on a field of a struct with named fields",
            )),
            None => Ok(()),
        }
    }
}

#[derive(Default)]
struct SerdeAttrs {
    rename: Option<String>,
    rename_all: Option<String>,
    default: bool,
    skip: bool,
}

impl SerdeAttrs {
    fn parse(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut parsed = SerdeAttrs::default();
        for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    parsed.rename = Some(meta.value()?.parse::<syn::LitStr>()?.value());
                } else if meta.path.is_ident("rename_all") {
                    parsed.rename_all = Some(meta.value()?.parse::<syn::LitStr>()?.value());
                } else if meta.path.is_ident("default") {
                    if meta.input.peek(syn::Token![=]) {
                        let _ = meta.value()?.parse::<syn::LitStr>()?;
                    }
                    parsed.default = true;
                } else if meta.path.is_ident("skip") || meta.path.is_ident("skip_deserializing") {
                    parsed.skip = true;
                } else if meta.path.is_ident("flatten") || meta.path.is_ident("untagged") {
                    return Err(meta.error(
                        "Schema cannot describe #[serde(flatten)] or #[serde(untagged)]; \
                         spell the fields out or implement Schema by hand",
                    ));
                } else if meta.input.peek(syn::Token![=]) {
                    // Other serde options do not change the schema; consume their value.
                    let _ = meta.value()?.parse::<Expr>()?;
                } else if meta.input.peek(syn::token::Paren) {
                    let _ = meta.input.parse::<proc_macro2::Group>()?;
                }
                Ok(())
            })?;
        }
        Ok(parsed)
    }
}

/// Apply a serde `rename_all` rule to a Rust identifier.
fn rename(ident: &str, rule: Option<&str>) -> String {
    let words = split_words(ident);
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let capitalised = || {
        lower
            .iter()
            .map(|w| {
                let mut chars = w.chars();
                chars
                    .next()
                    .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
    };
    match rule {
        Some("lowercase") => ident.to_lowercase(),
        Some("UPPERCASE") => ident.to_uppercase(),
        Some("PascalCase") => capitalised().concat(),
        Some("camelCase") => {
            let mut parts = capitalised();
            if let (Some(first), Some(word)) = (parts.first_mut(), lower.first()) {
                first.clone_from(word);
            }
            parts.concat()
        }
        Some("snake_case") => lower.join("_"),
        Some("SCREAMING_SNAKE_CASE") => lower.join("_").to_uppercase(),
        Some("kebab-case") => lower.join("-"),
        Some("SCREAMING-KEBAB-CASE") => lower.join("-").to_uppercase(),
        _ => ident.to_string(),
    }
}

/// Split `PascalCase`, `camelCase` and `snake_case` identifiers into words.
fn split_words(ident: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    for c in ident.chars() {
        if c == '_' {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
        } else if c.is_uppercase() && !current.is_empty() {
            words.push(std::mem::take(&mut current));
            current.push(c);
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}
