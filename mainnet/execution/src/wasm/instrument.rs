//! The rewrite every module gets before it runs: Farol's gas metering and a deterministic
//! bound on its stack, both inside the module itself, so that every engine that runs the
//! rewritten module (Cranelift, or the interpreter before Cranelift is done) charges the same
//! gas and halts at the same instruction.
//!
//! **Gas.** A mutable `i64` global, exported as [`GAS_EXPORT`], holds the frame's fuel
//! ([`super::FUEL_PER_GAS`] per gas). The code is cut into straight-line segments; a segment
//! starts at the function's entry and after every `loop`, `if`, `else`, `end`, `br`, `br_if`,
//! `br_table`, `return` and `unreachable`. Each segment starts by taking the fuel of all its
//! operators (see [`op_fuel`]) from the global. At a function's entry and at the top of
//! every loop body the code then checks the global and traps (`unreachable`) if it is below
//! zero; the host, seeing a negative global, reports out-of-gas. Between checks a module can
//! only run straight-line code and forward branches, so it stops within one function body's
//! worth of operators; a host function, or the frame's end, that finds the global negative
//! also ends the frame out of gas. `memory.grow`, `memory.copy`, `memory.fill`,
//! `memory.init` and the table operations that take a count (`table.grow`, `table.fill`,
//! `table.copy`, `table.init`) pay for their size right before they run, from the operand on
//! top of the stack, and check at once. Host functions charge the same global.
//!
//! **NaNs.** WebAssembly leaves the bits of a NaN that float arithmetic produces to the engine.
//! After every operator that can produce one (see [`nan_producing`]) the rewrite replaces a NaN
//! result with the canonical one, so every engine computes the same bits.
//!
//! **Frames.** Each function's first segment also pays one fuel for every
//! [`FRAME_SLOTS_PER_FUEL`] slots of its stack cost (below): the interpreter clears a new
//! frame's locals and operand slots and copies the function's constants into it at every call,
//! work that grows with the frame, not with the operators run.
//!
//! **Stack.** wasmtime's own stack limit traps at a depth that depends on the machine code
//! Cranelift emits, which is not a consensus rule. Each function costs its parameters and
//! locals, the most operands it ever holds, its distinct constants (the interpreter keeps them
//! in the frame), what the rewrite adds, and [`CALL_OVERHEAD`] "slots"; every `call` adds
//! the callee's cost to a counter in a new mutable global before the call and takes it off
//! after; a call that would take the counter past [`STACK_BUDGET`] traps (`unreachable`).
//! `call_indirect` counts the most expensive function of the module. The entry function's
//! cost is the counter's start; a module whose entry alone costs more than the budget is
//! refused (at deployment, where the rewrite first runs), because nothing would stop its
//! frame before the engine's own limit.
//!
//! The rewrite is a pure function of the deployed code, so every node runs the same module
//! and halts at the same place. The stored code (and its hash) is the deployed module; only
//! what runs is rewritten.

use wasm_encoder::reencode::{Error as ReencodeError, Reencode, RoundtripReencoder};
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, ExportKind, ExportSection, Function, GlobalSection,
    GlobalType, Ieee32, Ieee64, Instruction, Module, SectionId, ValType,
};
use wasmparser::{
    ExternalKind, FuncValidatorAllocations, FunctionBody, Operator, Parser, Payload, ValidPayload,
    Validator,
};

use super::validate::{FEATURES, MAX_MEMORY_PAGES};
use super::WasmError;
use super::{CHEAP_PAGES, EXTRA_PAGE_GAS, FUEL_PER_GAS, PAGE_GAS};

/// Slots one WASM activation may hold on its call stack. At 16 bytes a slot (an operand or
/// local is at most 8) that is 128 KiB of native stack, a quarter of what wasmtime allows one
/// activation ([`super::WASM_STACK`]).
pub const STACK_BUDGET: u32 = 8_192;

/// Slots a call costs beyond its callee's locals and operands: return address, frame pointer,
/// saved registers, and the spills the compiler adds.
pub const CALL_OVERHEAD: u32 = 8;

/// Slots the rewrite adds to every function: three scratch locals (`i32`, `f32`, `f64`) and
/// at most three operands above the original code's.
const REWRITE_SLOTS: u32 = 6;

/// Slots of a function's stack cost that one fuel pays for at each of its calls. The
/// interpreter (wasmi) clears a new frame's locals and operand slots and copies the
/// function's constants into it: a function of 1,000 `i64` locals and 4,000 distinct
/// constants, called in a loop without running any of them, took about 830 ns per call on the
/// interpreter against 80 ns for an empty one, and about 2 gas each until stop 48 (280 ns per
/// gas, ten times the interpreter's usual rate and a hundred times the compiled tier's). At
/// one fuel per 8 slots such a call pays about 80 gas.
pub const FRAME_SLOTS_PER_FUEL: u32 = 8;

fn err(e: impl std::fmt::Display) -> WasmError {
    WasmError::Invalid(format!("instrumenting the module: {e}"))
}

/// The export under which the rewritten module shows its fuel global to the host. Deployment
/// refuses modules with exports of their own under names starting with `__farol`.
pub const GAS_EXPORT: &str = "__farol_gas";

/// What the rewrite needs to know about a module before it starts.
struct Survey {
    /// The stack cost of every function, imported ones (host functions, cost
    /// [`CALL_OVERHEAD`]) first.
    costs: Vec<u32>,
    /// Parameters and locals of every function the module defines, in order.
    locals: Vec<u32>,
    /// Index of the exported `call`.
    entry: u32,
    /// Globals the module defines.
    globals: u32,
    /// The most pages its memory may have: Farol's bound or its own declared maximum.
    memory_limit: u64,
}

fn survey(module: &[u8]) -> Result<Survey, WasmError> {
    let mut validator = Validator::new_with_features(FEATURES);
    let mut allocs = FuncValidatorAllocations::default();
    let mut costs = Vec::new();
    let mut locals = Vec::new();
    let mut entry = None;
    let mut globals = 0;
    let mut memory_limit = MAX_MEMORY_PAGES;
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
            Payload::MemorySection(r) => {
                for memory in r.clone() {
                    let memory = memory.map_err(err)?;
                    memory_limit = memory_limit.min(memory.maximum.unwrap_or(u64::MAX));
                }
            }
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
            locals.push(v.len_locals());
            let mut ops = wasmparser::OperatorsReader::new(reader);
            let mut highest = 0;
            // Distinct constants, which the interpreter keeps in every frame of the function
            // (before stop 48 they were not counted: a function of thousands of them,
            // recursing, held tens of MB of the interpreter's value stack for a few thousand
            // gas). By their bits, as it keeps them; integers that fit in 16 bits are left
            // out (it encodes those in its instructions).
            let mut constants = std::collections::BTreeSet::new();
            let small = |v: i64| i64::from(i16::MIN) <= v && v <= i64::from(i16::MAX);
            while !ops.eof() {
                let offset = ops.original_position();
                let op = ops.read().map_err(err)?;
                v.op(offset, &op).map_err(err)?;
                highest = highest.max(v.operand_stack_height());
                match op {
                    Operator::I32Const { value } if !small(i64::from(value)) => {
                        constants.insert(u64::from(value as u32))
                    }
                    Operator::I64Const { value } if !small(value) => {
                        constants.insert(u64::from_ne_bytes(value.to_ne_bytes()))
                    }
                    Operator::F32Const { value } => constants.insert(u64::from(value.bits())),
                    Operator::F64Const { value } => constants.insert(value.bits()),
                    _ => false,
                };
            }
            ops.finish().map_err(err)?;
            let constants = u32::try_from(constants.len()).unwrap_or(u32::MAX);
            let slots = v
                .len_locals()
                .saturating_add(highest)
                .saturating_add(constants)
                .saturating_add(REWRITE_SLOTS);
            costs.push(slots.saturating_add(CALL_OVERHEAD));
            allocs = v.into_allocations();
        }
    }
    let entry = entry.ok_or_else(|| err("no exported `call`"))?;
    let entry_cost = costs.get(entry as usize).copied().unwrap_or(CALL_OVERHEAD);
    if entry_cost > STACK_BUDGET {
        return Err(WasmError::Invalid(format!(
            "the exported `call` needs {entry_cost} stack slots (at most {STACK_BUDGET})"
        )));
    }
    Ok(Survey { costs, locals, entry, globals, memory_limit })
}

/// The fuel one operator costs, before any size-dependent part (see the module
/// documentation). Changing any of it changes consensus.
///
/// - 0 for `nop`, `drop` and the structural markers `block`, `loop`, `else` and `end`;
/// - 4 for `call`, 6 for `call_indirect`;
/// - 4 for integer division and remainder, float division and square root;
/// - 16 for `memory.grow`, plus [`GROW_PAGE_FUEL`] per page asked for (paid even when the
///   growth fails);
/// - 1 for `memory.copy`, `memory.fill` and `memory.init`, plus 1 per byte;
/// - 1 for `table.grow`, `table.fill`, `table.copy` and `table.init`, plus
///   [`TABLE_ELEMENT_FUEL`] per element (before stop 27 they cost 1 whatever their size);
/// - 1 for everything else.
pub fn op_fuel(op: &Operator<'_>) -> u32 {
    use Operator as O;
    match op {
        O::Nop | O::Drop | O::Block { .. } | O::Loop { .. } | O::Else | O::End => 0,
        O::Call { .. } => 4,
        O::CallIndirect { .. } => 6,
        O::I32DivS
        | O::I32DivU
        | O::I32RemS
        | O::I32RemU
        | O::I64DivS
        | O::I64DivU
        | O::I64RemS
        | O::I64RemU
        | O::F32Div
        | O::F64Div
        | O::F32Sqrt
        | O::F64Sqrt => 4,
        O::MemoryGrow { .. } => 16,
        _ => 1,
    }
}

/// Fuel `memory.grow` costs per page asked for, on top of [`op_fuel`].
pub const GROW_PAGE_FUEL: i64 = 255;

/// Fuel `table.grow`, `table.fill`, `table.copy` and `table.init` cost per element, on top of
/// [`op_fuel`]: an element is a reference (a pointer and more), about what 8 bytes of
/// `memory.copy` cost.
pub const TABLE_ELEMENT_FUEL: i64 = 8;

/// The width of the float `op` produces, if it can produce a NaN whose bits the WebAssembly
/// specification leaves to the engine (arithmetic, rounding, min/max, promotion and
/// demotion). Loads, stores, constants, `abs`, `neg`, `copysign`, reinterpretations and
/// conversions from integers are exact.
fn nan_producing(op: &Operator<'_>) -> Option<ValType> {
    use Operator as O;
    match op {
        O::F32Add
        | O::F32Sub
        | O::F32Mul
        | O::F32Div
        | O::F32Sqrt
        | O::F32Min
        | O::F32Max
        | O::F32Ceil
        | O::F32Floor
        | O::F32Trunc
        | O::F32Nearest
        | O::F32DemoteF64 => Some(ValType::F32),
        O::F64Add
        | O::F64Sub
        | O::F64Mul
        | O::F64Div
        | O::F64Sqrt
        | O::F64Min
        | O::F64Max
        | O::F64Ceil
        | O::F64Floor
        | O::F64Trunc
        | O::F64Nearest
        | O::F64PromoteF32 => Some(ValType::F64),
        _ => None,
    }
}

/// The NaN every NaN-producing operator's NaN result is replaced with: positive, quiet, no
/// payload (the WebAssembly "canonical NaN").
const CANONICAL_NAN_F32: u32 = 0x7fc0_0000;
/// [`CANONICAL_NAN_F32`] for `f64`.
const CANONICAL_NAN_F64: u64 = 0x7ff8_0000_0000_0000;

/// Whether a new segment starts right after `op`.
fn ends_segment(op: &Operator<'_>) -> bool {
    use Operator as O;
    matches!(
        op,
        O::Loop { .. }
            | O::If { .. }
            | O::Else
            | O::End
            | O::Br { .. }
            | O::BrIf { .. }
            | O::BrTable { .. }
            | O::Return
            | O::Unreachable
    )
}

/// Replaces the float of width `width` on top of the stack with [`CANONICAL_NAN_F32`] or
/// [`CANONICAL_NAN_F64`] if it is a NaN. `scratch` is the function's scratch `i32` local; the
/// `f32` and `f64` ones follow it.
fn canonicalize(out: &mut Vec<Instruction<'_>>, width: ValType, scratch: u32) {
    let (t, nan, eq) = if width == ValType::F32 {
        (scratch + 1, Instruction::F32Const(Ieee32::new(CANONICAL_NAN_F32)), Instruction::F32Eq)
    } else {
        (scratch + 2, Instruction::F64Const(Ieee64::new(CANONICAL_NAN_F64)), Instruction::F64Eq)
    };
    // [x] -> [x, NaN, x == x] -> x if x == x (not a NaN), else the canonical NaN.
    out.extend([
        Instruction::LocalTee(t),
        nan,
        Instruction::LocalGet(t),
        Instruction::LocalGet(t),
        eq,
        Instruction::Select,
    ]);
}

struct Rewriter {
    survey: Survey,
    /// The most expensive function (what `call_indirect` charges).
    max: u32,
    /// Index of the stack counter global; the fuel global follows it.
    stack: u32,
    /// Whether to meter gas (off only to measure what metering costs).
    meter: bool,
    /// Functions of the code section rewritten so far.
    done: usize,
    added: bool,
}

impl Rewriter {
    fn gas(&self) -> u32 {
        self.stack + 1
    }

    fn add_globals(&mut self, globals: &mut GlobalSection) {
        let stack = GlobalType { val_type: ValType::I32, mutable: true, shared: false };
        let start = self.survey.costs.get(self.survey.entry as usize).copied().unwrap_or(self.max);
        globals.global(stack, &ConstExpr::i32_const(start as i32));
        let gas = GlobalType { val_type: ValType::I64, mutable: true, shared: false };
        globals.global(gas, &ConstExpr::i64_const(0));
        self.added = true;
    }

    /// Takes `fuel` from the fuel global; if `check`, traps if it went below zero.
    fn charge(&self, out: &mut Vec<Instruction<'static>>, fuel: u32, check: bool) {
        let g = self.gas();
        out.extend([
            Instruction::GlobalGet(g),
            Instruction::I64Const(i64::from(fuel)),
            Instruction::I64Sub,
            Instruction::GlobalSet(g),
        ]);
        if check {
            self.trap_if_negative(out);
        }
    }

    fn trap_if_negative(&self, out: &mut Vec<Instruction<'static>>) {
        out.extend([
            Instruction::GlobalGet(self.gas()),
            Instruction::I64Const(0),
            Instruction::I64LtS,
            Instruction::If(BlockType::Empty),
            Instruction::Unreachable,
            Instruction::End,
        ]);
    }

    /// Takes `per_unit` fuel for each unit of the `i32` on top of the stack, which stays
    /// there (`scratch` is an `i32` local).
    fn charge_size(&self, out: &mut Vec<Instruction<'static>>, scratch: u32, per_unit: i64) {
        let g = self.gas();
        out.extend([
            Instruction::LocalTee(scratch),
            Instruction::GlobalGet(g),
            Instruction::LocalGet(scratch),
            Instruction::I64ExtendI32U,
            Instruction::I64Const(per_unit),
            Instruction::I64Mul,
            Instruction::I64Sub,
            Instruction::GlobalSet(g),
        ]);
        self.trap_if_negative(out);
    }

    /// Takes the fuel of the gas a `memory.grow` of memory `mem` by the `i32` on top of the
    /// stack (which stays there; `scratch` is an `i32` local) will owe for its pages
    /// ([`super::memory_gas`] of the new size less that of the current one), before it
    /// runs: nothing if the growth will fail (past the module's memory limit). Before stop
    /// 38 the limiter recorded the debt and the frame paid it at its next host call or its
    /// end, after the pages were touched: 16 MiB for about 11,000 gas. Three operands at most
    /// above the original code's.
    fn prepay_growth(&self, out: &mut Vec<Instruction<'static>>, scratch: u32, mem: u32) {
        let g = self.gas();
        let (cheap, extra) = (CHEAP_PAGES as i64, (EXTRA_PAGE_GAS - PAGE_GAS) as i64);
        let fuel = FUEL_PER_GAS as i64;
        let size = [Instruction::MemorySize(mem), Instruction::I64ExtendI32U];
        let grown = [
            Instruction::MemorySize(mem),
            Instruction::I64ExtendI32U,
            Instruction::LocalGet(scratch),
            Instruction::I64ExtendI32U,
            Instruction::I64Add,
        ];
        // memory_gas(p) = PAGE_GAS × p + (EXTRA_PAGE_GAS − PAGE_GAS) × max(p − CHEAP_PAGES, 0).
        out.push(Instruction::LocalTee(scratch));
        out.extend(grown.iter().cloned());
        out.extend([
            Instruction::I64Const(self.survey.memory_limit as i64),
            Instruction::I64LeU,
            Instruction::If(BlockType::Empty),
            Instruction::GlobalGet(g),
            Instruction::LocalGet(scratch),
            Instruction::I64ExtendI32U,
            Instruction::I64Const(PAGE_GAS as i64 * fuel),
            Instruction::I64Mul,
            Instruction::I64Sub,
            Instruction::GlobalSet(g),
        ]);
        // The extra pages' part: taken for the new size, given back for the current one.
        let extra_pages =
            |out: &mut Vec<Instruction<'static>>, pages: &[Instruction<'static>], op| {
                out.extend(pages.iter().cloned());
                out.extend([Instruction::I64Const(cheap), Instruction::I64GtU]);
                out.extend([Instruction::If(BlockType::Empty), Instruction::GlobalGet(g)]);
                out.extend(pages.iter().cloned());
                out.extend([
                    Instruction::I64Const(cheap),
                    Instruction::I64Sub,
                    Instruction::I64Const(extra * fuel),
                    Instruction::I64Mul,
                    op,
                    Instruction::GlobalSet(g),
                    Instruction::End,
                ]);
            };
        extra_pages(out, &grown, Instruction::I64Sub);
        extra_pages(out, &size, Instruction::I64Add);
        out.push(Instruction::End);
        self.trap_if_negative(out);
    }

    /// `call` wrapped in the stack count for a callee costing `cost` slots.
    fn counted_call<'a>(&self, out: &mut Vec<Instruction<'a>>, cost: u32, call: Instruction<'a>) {
        let (g, c) = (self.stack, cost as i32);
        out.extend([
            Instruction::GlobalGet(g),
            Instruction::I32Const(c),
            Instruction::I32Add,
            Instruction::GlobalSet(g),
            Instruction::GlobalGet(g),
            Instruction::I32Const(STACK_BUDGET as i32),
            Instruction::I32GtU,
            Instruction::If(BlockType::Empty),
            Instruction::Unreachable,
            Instruction::End,
            call,
            Instruction::GlobalGet(g),
            Instruction::I32Const(c),
            Instruction::I32Sub,
            Instruction::GlobalSet(g),
        ]);
    }
}

impl Reencode for Rewriter {
    type Error = String;

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        wasm_encoder::reencode::utils::parse_global_section(self, globals, section)?;
        self.add_globals(globals);
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        wasm_encoder::reencode::utils::parse_export_section(self, exports, section)?;
        exports.export(GAS_EXPORT, ExportKind::Global, self.gas());
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
            self.add_globals(&mut globals);
            module.section(&globals);
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: FunctionBody<'_>,
    ) -> Result<(), ReencodeError<Self::Error>> {
        let mut locals = Vec::new();
        for pair in func.get_locals_reader()? {
            let (n, ty) = pair?;
            locals.push((n, self.val_type(ty)?));
        }
        let scratch = self.survey.locals.get(self.done).copied().ok_or_else(|| {
            ReencodeError::UserError("more function bodies than functions".to_string())
        })?;
        // The function's index: the imported ones come first.
        let index = self.survey.costs.len() - self.survey.locals.len() + self.done;
        let frame = self.survey.costs.get(index).copied().unwrap_or(self.max);
        self.done += 1;
        // Three more: scratch for the size of bulk memory operations (`i32`) and for NaN
        // canonicalization (`f32`, `f64`).
        locals.extend([(1, ValType::I32), (1, ValType::F32), (1, ValType::F64)]);
        let mut f = Function::new(locals);
        let mut reader = func.get_operators_reader()?;
        // The current segment: its instructions and the fuel of its operators.
        let mut segment: Vec<Instruction<'_>> = Vec::new();
        // The first segment pays for the frame too.
        let mut fuel = frame.div_ceil(FRAME_SLOTS_PER_FUEL);
        let mut head: Vec<Instruction<'static>> = Vec::new();
        // Whether the current segment is the function's first or a loop's body: only there
        // does its charge check the fuel.
        let mut check = true;
        while !reader.eof() {
            let op = reader.read()?;
            let starts_loop = matches!(op, Operator::Loop { .. });
            let nan = nan_producing(&op);
            fuel = fuel.saturating_add(op_fuel(&op));
            let size_fuel = match &op {
                Operator::MemoryGrow { .. } => Some(GROW_PAGE_FUEL),
                Operator::MemoryCopy { .. }
                | Operator::MemoryFill { .. }
                | Operator::MemoryInit { .. } => Some(1),
                Operator::TableGrow { .. }
                | Operator::TableFill { .. }
                | Operator::TableCopy { .. }
                | Operator::TableInit { .. } => Some(TABLE_ELEMENT_FUEL),
                _ => None,
            };
            let stack_cost = match &op {
                Operator::Call { function_index } => Some(
                    self.survey.costs.get(*function_index as usize).copied().unwrap_or(self.max),
                ),
                Operator::CallIndirect { .. } => Some(self.max),
                _ => None,
            };
            let grows = match &op {
                Operator::MemoryGrow { mem } => Some(*mem),
                _ => None,
            };
            let boundary = ends_segment(&op);
            let ins = RoundtripReencoder
                .instruction(op)
                .map_err(|e| ReencodeError::UserError(format!("{e:?}")))?;
            if let (Some(per_unit), true) = (size_fuel, self.meter) {
                let mut sized = Vec::new();
                self.charge_size(&mut sized, scratch, per_unit);
                if let Some(mem) = grows {
                    self.prepay_growth(&mut sized, scratch, mem);
                }
                segment.extend(sized);
            }
            match stack_cost {
                Some(c) => self.counted_call(&mut segment, c, ins),
                None => segment.push(ins),
            }
            if let Some(width) = nan {
                canonicalize(&mut segment, width, scratch);
            }
            if boundary || reader.eof() {
                if self.meter && (fuel > 0 || check) {
                    head.clear();
                    self.charge(&mut head, fuel, check);
                    for i in &head {
                        f.instruction(i);
                    }
                }
                for i in segment.drain(..) {
                    f.instruction(&i);
                }
                fuel = 0;
                check = starts_loop;
            }
        }
        code.function(&f);
        Ok(())
    }
}

/// `module` rewritten (see the module documentation), with gas metering if `meter`.
/// `module` must have passed [`super::validate()`].
pub(crate) fn rewrite(module: &[u8], meter: bool) -> Result<Vec<u8>, WasmError> {
    let survey = survey(module)?;
    let max = survey.costs.iter().copied().max().unwrap_or(CALL_OVERHEAD);
    let stack = survey.globals;
    let mut r = Rewriter { survey, max, stack, meter, done: 0, added: false };
    let mut out = Module::new();
    r.parse_core_module(&mut out, Parser::new(0), module).map_err(|e| err(format!("{e:?}")))?;
    if !r.added {
        return Err(err("no place for the counters"));
    }
    Ok(out.finish())
}

/// `module` with its gas metered and its stack counted (see the module documentation).
/// `module` must have passed [`super::validate()`].
pub fn instrument(module: &[u8]) -> Result<Vec<u8>, WasmError> {
    rewrite(module, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rewritten `memory.grow` takes the fuel of the pages before it grows: short of it,
    /// the frame traps with its memory as it was; with it, the fuel left is exactly what
    /// [`super::super::memory_gas`] says less the operators'. A growth that will fail costs
    /// nothing for its pages.
    #[test]
    fn a_growth_is_paid_before_the_pages_are_made() {
        use super::super::memory_gas;
        let src = r#"(module (memory (export "memory") 1 100)
            (func (export "call") (param i32) (result i32) (memory.grow (local.get 0))))"#;
        let module = wat::parse_str(src).unwrap_or_else(|e| panic!("{e}"));
        let code = instrument(&module).unwrap_or_else(|e| panic!("{e}"));
        let engine = wasmi::Engine::default();
        let m = wasmi::Module::new(&engine, &code).unwrap_or_else(|e| panic!("{e}"));
        let run = |fuel: i64, pages: i32| {
            let mut store = wasmi::Store::new(&engine, ());
            let inst = wasmi::Linker::<()>::new(&engine)
                .instantiate_and_start(&mut store, &m)
                .unwrap_or_else(|e| panic!("{e}"));
            let gas = inst.get_global(&store, GAS_EXPORT).unwrap_or_else(|| panic!("no gas"));
            gas.set(&mut store, wasmi::Val::I64(fuel)).unwrap_or_else(|e| panic!("{e}"));
            let call =
                inst.get_typed_func::<i32, i32>(&store, "call").unwrap_or_else(|e| panic!("{e}"));
            let result = call.call(&mut store, pages).ok();
            let memory = inst.get_memory(&store, "memory").unwrap_or_else(|| panic!("no memory"));
            let left = match gas.get(&store) {
                wasmi::Val::I64(v) => v,
                other => panic!("{other:?}"),
            };
            (result, memory.size(&store), left)
        };
        let fuel = |gas: u64| (gas * FUEL_PER_GAS) as i64;
        let pages = fuel(memory_gas(51) - memory_gas(1));
        // The operators' own fuel, and the per-page fuel of `memory.grow`, with 0 pages.
        let (r, size, left) = run(1_000_000, 0);
        assert_eq!((r, size), (Some(1), 1));
        let ops = 1_000_000 - left;
        let ops50 = ops + 50 * GROW_PAGE_FUEL;
        // Short of the pages' fuel by one: a trap, and the memory has not grown.
        assert_eq!(run(ops50 + pages - 1, 50).0, None);
        assert_eq!(run(ops50 + pages - 1, 50).1, 1);
        // Exactly enough.
        assert_eq!(run(ops50 + pages, 50), (Some(1), 51, 0));
        // Past the module's maximum: -1, and nothing for the pages.
        let ops120 = ops + 120 * GROW_PAGE_FUEL;
        assert_eq!(run(ops120, 120), (Some(-1), 1, 0));
    }
}
