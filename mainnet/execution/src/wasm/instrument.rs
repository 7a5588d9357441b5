//! A deterministic bound on how much native stack a WASM activation may use.
//!
//! wasmtime's own stack limit traps at a depth that depends on the machine code Cranelift
//! emits, which is not a consensus rule. Before compiling, Farol rewrites every module so that
//! it counts its own stack: each function costs its parameters and locals, the most operands
//! it ever holds, and [`CALL_OVERHEAD`] "slots"; every `call` adds the callee's cost to a
//! counter in a new mutable global before the call and takes it off after; a call that would
//! take the counter past [`STACK_BUDGET`] traps (`unreachable`). `call_indirect` counts the
//! most expensive function of the module. The entry function's cost is the counter's start.
//!
//! The rewrite is a pure function of the deployed code, so every node compiles the same
//! module and halts at the same call. The stored code (and its hash) is the deployed module;
//! only the compiled form is rewritten.

use wasm_encoder::reencode::{Error as ReencodeError, Reencode, RoundtripReencoder};
use wasm_encoder::{
    CodeSection, ConstExpr, Function, GlobalSection, GlobalType, Instruction, Module, SectionId,
    ValType,
};
use wasmparser::{
    ExternalKind, FuncValidatorAllocations, FunctionBody, Operator, Parser, Payload, ValidPayload,
    Validator,
};

use super::validate::FEATURES;
use super::WasmError;

/// Slots one WASM activation may hold on its call stack. At 16 bytes a slot (an operand or
/// local is at most 8) that is 128 KiB of native stack, far below [`super::WASM_STACK`] even
/// with [`super::MAX_WASM_NESTING`] activations nested.
pub const STACK_BUDGET: u32 = 8_192;

/// Slots a call costs beyond its callee's locals and operands: return address, frame pointer,
/// saved registers, and the spills the compiler adds.
pub const CALL_OVERHEAD: u32 = 8;

fn err(e: impl std::fmt::Display) -> WasmError {
    WasmError::Invalid(format!("instrumenting the module: {e}"))
}

/// The stack cost of every function, imported ones (host functions, cost
/// [`CALL_OVERHEAD`]) first, and the index of the exported `call`.
fn costs(module: &[u8]) -> Result<(Vec<u32>, u32, u32), WasmError> {
    let mut validator = Validator::new_with_features(FEATURES);
    let mut allocs = FuncValidatorAllocations::default();
    let mut costs = Vec::new();
    let mut entry = None;
    let mut globals = 0;
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.map_err(err)?;
        match &payload {
            Payload::ImportSection(r) => {
                for import in r.clone().into_imports() {
                    import.map_err(err)?;
                    costs.push(CALL_OVERHEAD);
                }
            }
            Payload::GlobalSection(r) => globals = r.count(),
            Payload::ExportSection(r) => {
                for export in r.clone() {
                    let export = export.map_err(err)?;
                    if export.name == "call" && export.kind == ExternalKind::Func {
                        entry = Some(export.index);
                    }
                }
            }
            _ => {}
        }
        if let ValidPayload::Func(func, body) = validator.payload(&payload).map_err(err)? {
            let mut v = func.into_validator(std::mem::take(&mut allocs));
            let mut reader = body.get_binary_reader();
            v.read_locals(&mut reader).map_err(err)?;
            let mut ops = wasmparser::OperatorsReader::new(reader);
            let mut highest = 0;
            while !ops.eof() {
                let offset = ops.original_position();
                let op = ops.read().map_err(err)?;
                v.op(offset, &op).map_err(err)?;
                highest = highest.max(v.operand_stack_height());
            }
            ops.finish().map_err(err)?;
            costs.push(v.len_locals().saturating_add(highest).saturating_add(CALL_OVERHEAD));
            allocs = v.into_allocations();
        }
    }
    let entry = entry.ok_or_else(|| err("no exported `call`"))?;
    Ok((costs, entry, globals))
}

struct Counter {
    costs: Vec<u32>,
    /// The most expensive function (what `call_indirect` charges).
    max: u32,
    /// Index of the counter global.
    global: u32,
    /// Cost of the entry function: the counter's initial value.
    start: u32,
    added: bool,
}

impl Counter {
    fn global_type() -> GlobalType {
        GlobalType { val_type: ValType::I32, mutable: true, shared: false }
    }

    fn emit(&self, f: &mut Function, cost: u32, call: &Instruction<'_>) {
        let g = self.global;
        let c = cost as i32;
        f.instruction(&Instruction::GlobalGet(g));
        f.instruction(&Instruction::I32Const(c));
        f.instruction(&Instruction::I32Add);
        f.instruction(&Instruction::GlobalSet(g));
        f.instruction(&Instruction::GlobalGet(g));
        f.instruction(&Instruction::I32Const(STACK_BUDGET as i32));
        f.instruction(&Instruction::I32GtU);
        f.instruction(&Instruction::If(wasm_encoder::BlockType::Empty));
        f.instruction(&Instruction::Unreachable);
        f.instruction(&Instruction::End);
        f.instruction(call);
        f.instruction(&Instruction::GlobalGet(g));
        f.instruction(&Instruction::I32Const(c));
        f.instruction(&Instruction::I32Sub);
        f.instruction(&Instruction::GlobalSet(g));
    }
}

impl Reencode for Counter {
    type Error = String;

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        wasm_encoder::reencode::utils::parse_global_section(self, globals, section)?;
        globals.global(Self::global_type(), &ConstExpr::i32_const(self.start as i32));
        self.added = true;
        Ok(())
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut Module,
        after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        // No global section in the input: add one where it belongs (after tags and memories,
        // before exports).
        let rank = |s: Option<SectionId>, missing: u8| match s {
            None => missing,
            Some(SectionId::Type) => 1,
            Some(SectionId::Import) => 2,
            Some(SectionId::Function) => 3,
            Some(SectionId::Table) => 4,
            Some(SectionId::Memory) => 5,
            Some(SectionId::Tag) => 6,
            Some(SectionId::Global) => 7,
            Some(_) => 8,
        };
        if !self.added && rank(after, 0) < 7 && rank(before, 8) > 7 {
            let mut globals = GlobalSection::new();
            globals.global(Self::global_type(), &ConstExpr::i32_const(self.start as i32));
            module.section(&globals);
            self.added = true;
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: FunctionBody<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        let mut f = self.new_function_with_parsed_locals(&func)?;
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            let cost = match &op {
                Operator::Call { function_index } => {
                    Some(self.costs.get(*function_index as usize).copied().unwrap_or(self.max))
                }
                Operator::CallIndirect { .. } => Some(self.max),
                _ => None,
            };
            let ins = RoundtripReencoder
                .instruction(op)
                .map_err(|e| ReencodeError::UserError(format!("{e:?}")))?;
            match cost {
                Some(c) => self.emit(&mut f, c, &ins),
                None => {
                    f.instruction(&ins);
                }
            }
        }
        code.function(&f);
        Ok(())
    }
}

/// `module` with its stack counted (see the module documentation). `module` must have passed
/// [`super::validate()`].
pub fn instrument(module: &[u8]) -> Result<Vec<u8>, WasmError> {
    let (costs, entry, globals) = costs(module)?;
    let max = costs.iter().copied().max().unwrap_or(CALL_OVERHEAD);
    let start = costs.get(entry as usize).copied().unwrap_or(max);
    let mut counter = Counter { costs, max, global: globals, start, added: false };
    let mut out = Module::new();
    counter
        .parse_core_module(&mut out, Parser::new(0), module)
        .map_err(|e| err(format!("{e:?}")))?;
    if !counter.added {
        return Err(err("no place for the stack counter"));
    }
    Ok(out.finish())
}
