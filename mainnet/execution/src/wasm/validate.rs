//! Deployment-time checks of a WASM contract: the module is valid WebAssembly with only the
//! deterministic features Farol enables, and its sizes stay under Farol's fixed bounds.

use wasmparser::{
    CompositeInnerType, ConstExpr, DataKind, ElementItems, ElementKind, ExternalKind, FuncType,
    Parser, Payload, TypeRef, ValType, Validator, WasmFeatures,
};

use super::host::{import_signature, HOST_MODULE};
use super::WasmError;

/// The proposals a Farol contract may use. Everything else (SIMD, threads, memory64,
/// multi-memory, tail calls, exceptions, GC, stack switching, custom page sizes) is refused.
pub(crate) const FEATURES: WasmFeatures = WasmFeatures::MUTABLE_GLOBAL
    .union(WasmFeatures::SATURATING_FLOAT_TO_INT)
    .union(WasmFeatures::SIGN_EXTENSION)
    .union(WasmFeatures::REFERENCE_TYPES)
    .union(WasmFeatures::MULTI_VALUE)
    .union(WasmFeatures::BULK_MEMORY)
    .union(WasmFeatures::FLOATS)
    .union(WasmFeatures::EXTENDED_CONST);

/// Linear memory a contract may have, in 64 KiB pages (16 MiB).
pub const MAX_MEMORY_PAGES: u64 = 256;
/// Functions a module may define.
pub const MAX_FUNCTIONS: u32 = 8_192;
/// Locals one function may declare (parameters included).
pub const MAX_LOCALS: u32 = 1_024;
/// Globals a module may define.
pub const MAX_GLOBALS: u32 = 256;
/// Elements the one table may hold.
pub const MAX_TABLE_ELEMENTS: u64 = 8_192;
/// Types a module may define.
pub const MAX_TYPES: u32 = 1_024;
/// Operators one constant expression (a global's initial value, a segment's offset, an
/// element) may hold, its `end` included. Extended constants allow arithmetic there, and the
/// interpreter (wasmi) builds and evaluates such an expression as nested closures, one level
/// per operator: one of hundreds of thousands of operators (a few MB of code, which `eth_call`
/// state overrides may carry) overflowed the native stack and aborted the process.
pub const MAX_CONST_EXPR_OPERATORS: usize = 32;

/// What deployment learned about a valid module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Pages of memory every instance starts with.
    pub initial_pages: u64,
    /// Bytes of the active data segments, which instantiation copies into the memory.
    pub active_data_bytes: u64,
    /// Elements of the element segments, of every kind: instantiation writes the active ones
    /// into the table, and the interpreter sets up the passive ones too.
    pub elements: u64,
    /// Data and element segments, of every kind: instantiation sets each up.
    pub segments: u64,
}

fn invalid(reason: impl Into<String>) -> WasmError {
    WasmError::Invalid(reason.into())
}

/// Refuses a constant expression of more than [`MAX_CONST_EXPR_OPERATORS`] operators.
fn short_const_expr(expr: &ConstExpr<'_>) -> Result<(), WasmError> {
    let mut reader = expr.get_operators_reader();
    let mut operators = 0usize;
    while !reader.eof() {
        reader.read().map_err(|e| invalid(e.message().to_string()))?;
        operators += 1;
        if operators > MAX_CONST_EXPR_OPERATORS {
            return Err(invalid(format!(
                "a constant expression of more than {MAX_CONST_EXPR_OPERATORS} operators"
            )));
        }
    }
    Ok(())
}

/// Checks `module` (the bytes after the marker) the way deployment does.
pub fn validate(module: &[u8]) -> Result<ModuleInfo, WasmError> {
    Validator::new_with_features(FEATURES)
        .validate_all(module)
        .map_err(|e| invalid(format!("not valid WebAssembly: {}", e.message())))?;

    let mut types: Vec<Option<FuncType>> = Vec::new();
    let mut imported_funcs = 0u32;
    let mut func_types: Vec<u32> = Vec::new();
    let mut memory_pages: Option<u64> = None;
    let mut exports_call = false;
    let mut exports_memory = false;
    let (mut active_data_bytes, mut elements, mut segments) = (0u64, 0u64, 0u64);
    // Function bodies come in the order of the function section.
    let mut bodies = 0usize;
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.map_err(|e| invalid(e.message().to_string()))?;
        match payload {
            Payload::TypeSection(r) => {
                if r.count() > MAX_TYPES {
                    return Err(invalid(format!("{} types (at most {MAX_TYPES})", r.count())));
                }
                for group in r {
                    let group = group.map_err(|e| invalid(e.message().to_string()))?;
                    for ty in group.into_types() {
                        types.push(match ty.composite_type.inner {
                            CompositeInnerType::Func(f) => Some(f),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(r) => {
                for import in r.into_imports() {
                    let import = import.map_err(|e| invalid(e.message().to_string()))?;
                    let TypeRef::Func(t) = import.ty else {
                        return Err(invalid(format!(
                            "import {}.{}: only functions may be imported",
                            import.module, import.name
                        )));
                    };
                    let Some(expected) = (import.module == HOST_MODULE)
                        .then(|| import_signature(import.name))
                        .flatten()
                    else {
                        return Err(invalid(format!(
                            "import {}.{} does not exist",
                            import.module, import.name
                        )));
                    };
                    let got = types.get(t as usize).cloned().flatten();
                    let want =
                        FuncType::new(expected.0.iter().copied(), expected.1.iter().copied());
                    if got.as_ref() != Some(&want) {
                        return Err(invalid(format!(
                            "import {HOST_MODULE}.{} has the wrong signature (expected {want})",
                            import.name
                        )));
                    }
                    imported_funcs += 1;
                }
            }
            Payload::FunctionSection(r) => {
                if r.count() > MAX_FUNCTIONS {
                    return Err(invalid(format!(
                        "{} functions (at most {MAX_FUNCTIONS})",
                        r.count()
                    )));
                }
                for t in r {
                    func_types.push(t.map_err(|e| invalid(e.message().to_string()))?);
                }
            }
            Payload::TableSection(r) => {
                // wasmtime's pool holds one table per instance: a second would fail every
                // instantiation, so it is refused here.
                if r.count() > 1 {
                    return Err(invalid(format!("{} tables (at most 1)", r.count())));
                }
                for table in r {
                    let table = table.map_err(|e| invalid(e.message().to_string()))?;
                    let max = table.ty.maximum.unwrap_or(u64::MAX);
                    if table.ty.initial > MAX_TABLE_ELEMENTS || max < table.ty.initial {
                        return Err(invalid(format!(
                            "table of {} elements (at most {MAX_TABLE_ELEMENTS})",
                            table.ty.initial
                        )));
                    }
                }
            }
            Payload::MemorySection(r) => {
                for memory in r {
                    let memory = memory.map_err(|e| invalid(e.message().to_string()))?;
                    if memory.initial > MAX_MEMORY_PAGES {
                        return Err(invalid(format!(
                            "memory of {} pages (at most {MAX_MEMORY_PAGES})",
                            memory.initial
                        )));
                    }
                    if memory.shared {
                        return Err(invalid("shared memory"));
                    }
                    memory_pages = Some(memory.initial);
                }
            }
            Payload::GlobalSection(r) => {
                if r.count() > MAX_GLOBALS {
                    return Err(invalid(format!("{} globals (at most {MAX_GLOBALS})", r.count())));
                }
                for global in r {
                    let global = global.map_err(|e| invalid(e.message().to_string()))?;
                    short_const_expr(&global.init_expr)?;
                }
            }
            Payload::StartSection { .. } => {
                return Err(invalid("a start function (use the exported `call`)"));
            }
            Payload::ExportSection(r) => {
                for export in r {
                    let export = export.map_err(|e| invalid(e.message().to_string()))?;
                    match (export.name, export.kind) {
                        ("call", ExternalKind::Func) => {
                            let local =
                                export.index.checked_sub(imported_funcs).ok_or_else(|| {
                                    invalid("the export `call` is an imported function")
                                })?;
                            let ty = func_types
                                .get(local as usize)
                                .and_then(|t| types.get(*t as usize).cloned().flatten());
                            if ty
                                .as_ref()
                                .is_none_or(|t| !t.params().is_empty() || !t.results().is_empty())
                            {
                                return Err(invalid(
                                    "the export `call` must take and return nothing",
                                ));
                            }
                            exports_call = true;
                        }
                        ("memory", ExternalKind::Memory) => exports_memory = true,
                        (name, _) if name.starts_with("__farol") => {
                            return Err(invalid(format!(
                                "the export `{name}`: names starting with `__farol` are Farol's"
                            )));
                        }
                        _ => {}
                    }
                }
            }
            Payload::DataSection(r) => {
                for data in r {
                    let data = data.map_err(|e| invalid(e.message().to_string()))?;
                    segments += 1;
                    if let DataKind::Active { offset_expr, .. } = &data.kind {
                        short_const_expr(offset_expr)?;
                        active_data_bytes =
                            active_data_bytes.saturating_add(data.data.len() as u64);
                    }
                }
            }
            Payload::ElementSection(r) => {
                for element in r {
                    let element = element.map_err(|e| invalid(e.message().to_string()))?;
                    segments += 1;
                    // (An element's own expression gives a `funcref`: only `ref.null`,
                    // `ref.func` and `global.get` do, so none is long.)
                    if let ElementKind::Active { offset_expr, .. } = &element.kind {
                        short_const_expr(offset_expr)?;
                    }
                    // Passive ones count too (before stop 48 they did not, and the
                    // interpreter set up some 60,000 elements of a 64 KiB module at each
                    // instantiation for 16 gas).
                    let n = match element.items {
                        ElementItems::Functions(f) => f.count(),
                        ElementItems::Expressions(_, e) => e.count(),
                    };
                    elements = elements.saturating_add(u64::from(n));
                }
            }
            Payload::CodeSectionEntry(body) => {
                // Parameters are locals too (before stop 48 only the declared ones counted).
                let params = func_types
                    .get(bodies)
                    .and_then(|t| types.get(*t as usize))
                    .and_then(Option::as_ref)
                    .map_or(0, |t| t.params().len());
                bodies += 1;
                let mut locals = u32::try_from(params).unwrap_or(u32::MAX);
                let reader =
                    body.get_locals_reader().map_err(|e| invalid(e.message().to_string()))?;
                for local in reader {
                    let (n, _): (u32, ValType) =
                        local.map_err(|e| invalid(e.message().to_string()))?;
                    locals = locals.saturating_add(n);
                }
                if locals > MAX_LOCALS {
                    return Err(invalid(format!(
                        "a function with {locals} locals (at most {MAX_LOCALS})"
                    )));
                }
            }
            _ => {}
        }
    }
    let initial_pages = memory_pages.ok_or_else(|| invalid("no memory"))?;
    if !exports_memory {
        return Err(invalid("the memory is not exported as `memory`"));
    }
    if !exports_call {
        return Err(invalid("no exported function `call`"));
    }
    Ok(ModuleInfo { initial_pages, active_data_bytes, elements, segments })
}
