"""The Python side of tests/export.rs: loads a run with python/resnet_repro_torch.py, computes
its logits on the test's batch, exports it as ONNX and runs the export in onnxruntime.

    export_check.py RUN_DIR BATCH.safetensors OUT_DIR THREADS

writes OUT_DIR/torch.safetensors (`logits`), OUT_DIR/model.onnx and OUT_DIR/onnx.safetensors."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))

import numpy as np
import onnxruntime
import torch
from safetensors.torch import load_file, save_file

import resnet_repro_torch as rr

run_dir, batch_file, out, threads = sys.argv[1:5]
torch.set_num_threads(int(threads))
run = rr.load_run(run_dir)
x = load_file(batch_file)["input"]
with torch.no_grad():
    logits = run.model(x)
save_file({"logits": logits.contiguous()}, os.path.join(out, "torch.safetensors"))
onnx_path = rr.export_onnx(run, os.path.join(out, "model.onnx"))
session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
(got,) = session.run(["logits"], {"input": x.numpy()})
save_file({"logits": torch.from_numpy(np.ascontiguousarray(got))}, os.path.join(out, "onnx.safetensors"))
