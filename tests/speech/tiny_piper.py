"""A tiny Piper voice made in code: a real ONNX model with Piper's inputs and outputs
(`input`, `input_lengths`, `scales` -> audio), whose output is a tone 256 samples long per
phoneme id, times the length scale. It exercises the real loading and synthesis path of
piper-tts without downloading a voice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SAMPLE_RATE = 16_000
HOP = 256


def _const(name: str, array: np.ndarray):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))


def build_model(broken: bool = False) -> onnx.ModelProto:
    """`broken`: the output reshape asks for 3 samples, so every inference fails at run
    time (for the engine-failure path); the model still loads."""
    nodes = [
        _const("one", np.array([1], dtype=np.int64)),
        _const("two", np.array([2], dtype=np.int64)),
        _const("zero", np.array([0], dtype=np.int64)),
        _const("hop", np.array([HOP], dtype=np.float32)),
        _const("freq", np.array([0.07], dtype=np.float32)),
        _const("half", np.array([0.5], dtype=np.float32)),
        _const("shape_out", np.array([1, 1, 1, 3 if broken else -1], dtype=np.int64)),
        # samples = round(len(ids) * HOP * length_scale), length_scale = scales[1]
        helper.make_node("Shape", ["input"], ["in_shape"]),
        helper.make_node("Slice", ["in_shape", "one", "two"], ["n_ids"]),
        helper.make_node("Cast", ["n_ids"], ["n_ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["scales", "one", "two"], ["length_scale"]),
        helper.make_node("Mul", ["n_ids_f", "hop"], ["base"]),
        helper.make_node("Mul", ["base", "length_scale"], ["total_f"]),
        helper.make_node("Round", ["total_f"], ["total_r"]),
        helper.make_node("Cast", ["total_r"], ["total"], to=TensorProto.INT64),
        helper.make_node("Squeeze", ["total", "zero"], ["limit"]),
        _const("start", np.array(0, dtype=np.int64)),
        _const("step", np.array(1, dtype=np.int64)),
        helper.make_node("Range", ["start", "limit", "step"], ["t"]),
        helper.make_node("Cast", ["t"], ["t_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["t_f", "freq"], ["phase"]),
        helper.make_node("Sin", ["phase"], ["wave"]),
        helper.make_node("Mul", ["wave", "half"], ["quiet"]),
        helper.make_node("Reshape", ["quiet", "shape_out"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_piper",
        [helper.make_tensor_value_info("input", TensorProto.INT64, [1, "n"]),
         helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 1, "samples"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_voice(folder: Path, name: str = "tiny-en", espeak_voice: str = "en-us",
                broken: bool = False) -> Path:
    """Write NAME.onnx and NAME.onnx.json into `folder`; returns the model's path."""
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"{name}.onnx"
    onnx.save(build_model(broken), model_path)
    config = {
        "audio": {"sample_rate": SAMPLE_RATE},
        "espeak": {"voice": espeak_voice},
        "phoneme_type": "espeak",
        "num_symbols": max(i for ids in DEFAULT_PHONEME_ID_MAP.values() for i in ids) + 1,
        "num_speakers": 1,
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
    }
    model_path.with_name(model_path.name + ".json").write_text(json.dumps(config))
    return model_path
