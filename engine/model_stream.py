"""A model whose decoder blocks stay in the checkpoint files until a stage needs one (streaming mode).

`open_streamed` builds the transformers model on the `meta` device (accelerate's `init_empty_weights`:
parameters get shapes but no memory; buffers such as the rotary `inv_freq` are computed for real), then
reads every parameter outside the decoder blocks (embeddings, final norm, `lm_head`, tied or not) from the
safetensors files. `StreamedModel.materialise(i)` reads block i's parameters from the files (memory-mapped
through `safe_open`, a single file or a sharded checkpoint with `model.safetensors.index.json`), converted
to the model's dtype and rounded to the 16 bits they will be stored in (as `round_kept_` does for a fully
loaded model), and gives them back to `meta` afterwards — or, with `keep=True`, leaves what is still
attached (after calibration: the QuantLinears and the block's norms). So the full-precision weights in
memory are one block at a time plus the non-block tensors, and a model larger than RAM is never
materialised whole. The files are opened for each read and closed after it, so pages they mapped are
not held by the process between blocks.

Limits: safetensors only (no `.bin`); checkpoint names must match the model's parameter names (up to the
base-model prefix, e.g. `model.`), which holds for Llama, Qwen, Mistral, Phi-3 and Gemma checkpoints
but not for architectures whose weights transformers renames or fuses while loading. A `.gguf` source is
first converted by `gguf_to_hf_folder`, which loads it whole once (as the normal path does).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bitsmith.engine.errors import BadInputError, UnsupportedModelError
from bitsmith.engine.model import (
    Block,
    _quiet_transformers,
    find_blocks,
    gguf_to_hf_folder,
    not_a_causal_lm,
    resolve_source,
)
from bitsmith.engine.plan import loads_whole, stream_activation_budget

INDEX_FILE = "model.safetensors.index.json"
# The normal quantize path holds the float32 model, and while it measures one float32 ΔW² per candidate format
# plus transient gradients: on SmolLM2-135M (513 MiB of float32 weights, demo preset, 2 formats) its peak RSS was
# 2.6 GB, ~400 MB of it torch and transformers. So it needs about (2 + formats) × the float32 weights; a model
# for which that exceeds this share of the available RAM is streamed unless the user says otherwise.


class CheckpointFiles:
    """The tensors of a safetensors checkpoint (one file, several, or shards named by an index json)."""

    def __init__(self, folder: str | Path) -> None:
        from safetensors import safe_open

        self.folder = Path(folder)
        index = self.folder / INDEX_FILE
        self.where: dict[str, Path] = {}
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise BadInputError(f"{index} is not a safetensors index: {exc}", "download the model again") from exc
            self.where = {key: self.folder / name for key, name in weight_map.items()}
            missing = sorted({p.name for p in self.where.values() if not p.is_file()})
            if missing:
                raise BadInputError(f"{self.folder} lacks shards {', '.join(missing[:3])}", "download the model again")
        else:
            for path in sorted(self.folder.glob("*.safetensors")):
                with safe_open(str(path), framework="pt") as f:
                    self.where.update(dict.fromkeys(f.keys(), path))
        if not self.where:
            raise UnsupportedModelError(
                f"{self.folder} has no safetensors weights, which streaming reads block by block",
                "convert the checkpoint to safetensors, or run without --stream",
            )

    def __contains__(self, key: str) -> bool:
        return key in self.where

    def keys(self) -> list[str]:
        """Every tensor name in the checkpoint."""
        return list(self.where)

    def read(self, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """The tensors named `keys` as CPU tensors of their stored dtype; the files are closed again afterwards."""
        from safetensors import safe_open

        by_file: dict[Path, list[str]] = {}
        for key in keys:
            by_file.setdefault(self.where[key], []).append(key)
        out: dict[str, torch.Tensor] = {}
        for path, names in by_file.items():
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in names:
                    out[name] = f.get_tensor(name)
        return out

    def numel(self) -> int:
        """Elements over all tensors (from the headers; nothing is read)."""
        from safetensors import safe_open

        total = 0
        for path in sorted(set(self.where.values())):
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    shape = f.get_slice(key).get_shape()
                    n = 1
                    for d in shape:
                        n *= int(d)
                    total += n
        return total


@dataclass
class _Slot:
    """One parameter of the skeleton: where it hangs, its checkpoint key, and its empty (meta) original."""

    module: nn.Module
    attr: str
    key: str
    empty: nn.Parameter


class StreamedModel:
    """A causal LM whose decoder blocks are materialised from the checkpoint one at a time (see module doc)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: object,
        files: CheckpointFiles,
        dtype: torch.dtype = torch.float32,
        round_to: torch.dtype | None = torch.float16,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.files = files
        self.dtype = dtype
        self.round_to = round_to
        self.blocks: list[Block] = find_blocks(model)
        self._slots = [self._block_slots(b) for b in self.blocks]
        self.loads = 0  # blocks read from the files, for progress and tests
        self.peak_full_precision = 0  # most blocks holding full-precision linear weights at any one time

    # -- names ------------------------------------------------------------------------------------
    def key_for(self, name: str) -> str | None:
        """The checkpoint key of model parameter `name` (exact, or with / without the base-model prefix)."""
        if name in self.files:
            return name
        prefix = getattr(self.model, "base_model_prefix", "") or ""
        if prefix:
            alt = name[len(prefix) + 1 :] if name.startswith(prefix + ".") else f"{prefix}.{name}"
            if alt in self.files:
                return alt
        return None

    def _block_slots(self, block: Block) -> list[_Slot]:
        slots = []
        for mod_name, mod in block.module.named_modules():
            for attr, p in mod._parameters.items():
                if p is None:
                    continue
                name = ".".join(x for x in (block.name, mod_name, attr) if x)
                key = self.key_for(name)
                if key is None:
                    raise UnsupportedModelError(
                        f"the checkpoint in {self.files.folder} has no tensor for {name}",
                        "this architecture's checkpoint names differ from its parameters; run without --stream",
                    )
                slots.append(_Slot(mod, attr, key, p))
        return slots

    # -- tensors ----------------------------------------------------------------------------------
    def _convert(self, t: torch.Tensor) -> torch.Tensor:
        """The stored tensor as this model holds it: its dtype, rounded to what it will be saved in."""
        if not t.is_floating_point():
            return t
        t = t.to(self.dtype)
        if self.round_to is not None and self.dtype != self.round_to:
            t = t.to(self.round_to).to(self.dtype)
        return t

    def _load(self, slots: list[_Slot]) -> None:
        todo = [s for s in slots if s.module._parameters.get(s.attr) is s.empty]
        tensors = self.files.read({s.key for s in todo})
        made: dict[str, nn.Parameter] = {}  # a key used twice (tied inside a block) gets one Parameter
        for s in todo:
            if s.key not in made:
                t = tensors[s.key]
                if tuple(t.shape) != tuple(s.empty.shape):
                    raise BadInputError(
                        f"{s.key} has shape {tuple(t.shape)} in the checkpoint, the model expects "
                        f"{tuple(s.empty.shape)}",
                        "the checkpoint does not match its config.json: download the model again",
                    )
                made[s.key] = nn.Parameter(self._convert(t), requires_grad=s.empty.requires_grad)
            s.module._parameters[s.attr] = made[s.key]

    # -- blocks -----------------------------------------------------------------------------------
    def load_block(self, index: int) -> Block:
        """Read block `index`'s parameters that are still on meta from the files; returns the block."""
        self._load(self._slots[index])
        self.loads += 1
        self.peak_full_precision = max(self.peak_full_precision, self.full_precision_blocks())
        return self.blocks[index]

    def release_block(self, index: int) -> None:
        """Give every parameter of block `index` that came from the files back to meta (QuantLinears swapped in
        meanwhile are not parameters of the original modules and stay)."""
        for s in self._slots[index]:
            if s.module._parameters.get(s.attr) is not s.empty:
                s.module._parameters[s.attr] = s.empty

    def release_detached(self, index: int) -> None:
        """Give back to meta the parameters of block `index`'s modules that are no longer part of the block (linears
        that calibration replaced by QuantLinears): whoever still holds such a module (a layout, a Block's `linears`)
        then holds no full-precision weights."""
        attached = {id(m) for m in self.blocks[index].module.modules()}
        for s in self._slots[index]:
            if id(s.module) not in attached and s.module._parameters.get(s.attr) is not s.empty:
                s.module._parameters[s.attr] = s.empty

    @contextlib.contextmanager
    def materialise(self, index: int, keep: bool = False) -> Iterator[Block]:
        """Block `index` with real weights for the time of the `with`; released afterwards, or with `keep` only
        what is no longer attached to the block (so a calibrated block keeps its QuantLinears and norms, and the
        full-precision weights it replaced are freed)."""
        block = self.load_block(index)
        try:
            yield block
        finally:
            if keep:
                self.release_detached(index)
            else:
                self.release_block(index)

    def full_precision_blocks(self) -> int:
        """How many blocks hold real (non-meta) nn.Linear weights right now."""
        return sum(
            any(isinstance(m, nn.Linear) and not m.weight.is_meta for m in b.module.modules()) for b in self.blocks
        )

    def held_bytes(self) -> int:
        """Bytes of block parameters read from the files that the blocks' original modules still hold, attached to
        the model or not (after a calibration with keep=True: the norms only)."""
        held = {id(p): p for slots in self._slots for s in slots
                if (p := s.module._parameters.get(s.attr)) is not None and p is not s.empty and not p.is_meta}
        return sum(p.numel() * p.element_size() for p in held.values())

    def is_complete(self) -> bool:
        """True when no parameter is left on meta (after calibration with keep=True, for example)."""
        return not any(p.is_meta for p in self.model.parameters())


def checkpoint_folder(source: str, trust_remote_code: bool = False) -> Path:
    """The local folder with config and safetensors for `source` (`bundled`, a .gguf, a folder or a Hub id)."""
    source = resolve_source(source)
    path = Path(source)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BadInputError(f"GGUF file {path} does not exist", "check the path")
        return gguf_to_hf_folder(path, trust_remote_code)
    if path.is_dir():
        return path
    if not path.exists() and source.count("/") == 1 and not source.startswith((".", "/")):
        from bitsmith.engine.hub_download import find_local

        found = find_local(source)
        if found is not None:
            return Path(found.path)
        raise BadInputError(
            f"{source} is not downloaded; streaming reads the weights from local files",
            f"run `bitsmith download {source}` first",
        )
    raise BadInputError(
        f"{source!r} is not a local folder, a .gguf file or a Hub id (owner/name)",
        "give a model folder, a .gguf file, a Hub id like HuggingFaceTB/SmolLM2-135M-Instruct, or 'bundled'",
    )


def _outside_blocks(model: nn.Module, blocks: list[Block]) -> list[tuple[str, nn.Module, str, nn.Parameter]]:
    """(qualified name, module, attribute, parameter) of every parameter outside the blocks, ties listed each time."""
    inside = {id(m) for b in blocks for m in b.module.modules()}
    out = []
    for mod_name, mod in model.named_modules():
        if id(mod) in inside:
            continue
        for attr, p in mod._parameters.items():
            if p is not None:
                out.append((f"{mod_name}.{attr}" if mod_name else attr, mod, attr, p))
    return out


def open_streamed(
    source: str | Path,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    round_to: torch.dtype | None = torch.float16,
) -> StreamedModel:
    """The model of `source` with its blocks on meta and everything else read from the files (see module doc).

    `round_to` rounds float parameters to the dtype they will be stored in (None: as read), so that the
    streamed full-precision reference is the one `round_kept_` makes of a fully loaded model.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    _quiet_transformers()
    folder = checkpoint_folder(str(source), trust_remote_code)
    files = CheckpointFiles(folder)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        raise not_a_causal_lm(source, exc) from exc
    with contextlib.suppress(OSError, ValueError):
        model.generation_config = GenerationConfig.from_pretrained(folder)
    model.eval()
    streamed = StreamedModel(model, tok, files, dtype=dtype, round_to=round_to)
    outside = _outside_blocks(model, streamed.blocks)
    slots, absent = [], set()
    for name, mod, attr, p in outside:
        key = streamed.key_for(name)
        if key is None:
            absent.add(name)
        elif p.is_meta:
            slots.append(_Slot(mod, attr, key, p))
    streamed._load(slots)
    # transformers' own tying, symmetric as in from_pretrained: a checkpoint may hold only `lm_head.weight`
    model.tie_weights(missing_keys=absent)
    _load_buffers(streamed)
    missing = [name for name, mod, attr, _ in outside if mod._parameters[attr].is_meta]
    if missing:
        raise UnsupportedModelError(
            f"the checkpoint in {folder} has no tensor for {', '.join(missing[:5])}",
            "this architecture's checkpoint names differ from its parameters; run without --stream",
        )
    return streamed


def _load_buffers(streamed: StreamedModel) -> None:
    """Persistent buffers that the checkpoint stores replace the ones computed at construction."""
    model = streamed.model
    wanted = {}
    for mod_name, mod in model.named_modules():
        for attr, buf in mod._buffers.items():
            if buf is None or attr in mod._non_persistent_buffers_set:
                continue
            key = streamed.key_for(f"{mod_name}.{attr}" if mod_name else attr)
            if key is not None:
                wanted[key] = (mod, attr)
    if wanted:
        for key, t in streamed.files.read(wanted).items():
            mod, attr = wanted[key]
            mod._buffers[attr] = t.to(streamed.dtype) if t.is_floating_point() else t


def float32_bytes(folder: str | Path) -> int:
    """Bytes the checkpoint's weights take once loaded in float32 (what the normal quantize path holds)."""
    return 4 * CheckpointFiles(folder).numel()


def available_ram() -> int:
    """Bytes of RAM available now."""
    import psutil

    return int(psutil.virtual_memory().available)


def activation_budget() -> int:
    """Bytes the streamed stages may keep in activations at once (engine/plan.py's rule on the RAM available now)."""
    return stream_activation_budget(available_ram())


def choose_streaming(
    source: str, requested: bool | None, trust_remote_code: bool = False, formats: int = 2
) -> tuple[bool, str]:
    """(stream?, why): as `requested` when given, else stream when the normal path, measuring `formats`
    candidate formats, would not fit in the available RAM (engine/plan.py: loads_whole).

    The automatic choice only reads file headers; a source without local safetensors (a Hub id not yet
    downloaded, a folder of .bin files) is never streamed automatically.
    """
    if requested is not None:
        return bool(requested), "asked for" if requested else "switched off"
    path = Path(resolve_source(source))
    if path.suffix == ".gguf":
        return False, "a GGUF source is converted in full once; it is not streamed unless asked for"
    try:
        folder = checkpoint_folder(source, trust_remote_code)
        need = float32_bytes(folder)
    except (BadInputError, UnsupportedModelError, OSError):
        return False, "no local safetensors to stream from"
    free = available_ram()
    whole = (2 + formats) * need
    sizes = (f"loading it whole needs about {whole / 2**30:.1f} GiB ({need / 2**30:.1f} GiB of float32 weights), "
             f"{free / 2**30:.1f} GiB of RAM is available")
    if not loads_whole(need, formats, free):
        return True, f"the model would not fit in RAM: {sizes}"
    return False, f"the model fits in RAM: {sizes}"
