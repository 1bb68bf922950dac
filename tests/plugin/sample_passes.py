"""A plugin offering one real pass per stage, for tests/plugin/test_passes.py (loaded through
EDGESDK_PLUGINS, in the TVM worker too)."""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper
from pydantic import BaseModel, ConfigDict

from edgesdk.plugin import Pass, hookimpl


class ScaleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factor: float = 2.0


class ScaleOutputs(Pass):
    """ONNX stage: every graph output multiplied by ``factor``."""

    name = "scale-outputs"
    stage = "onnx"
    config_model = ScaleConfig

    def run(self, module: onnx.ModelProto, config: ScaleConfig) -> onnx.ModelProto:
        graph = module.graph
        for output in graph.output:
            inner = f"{output.name}_unscaled"
            for node in graph.node:
                node.output[:] = [inner if name == output.name else name for name in node.output]
            dtype = helper.tensor_dtype_to_np_dtype(output.type.tensor_type.elem_type)
            graph.initializer.append(numpy_helper.from_array(dtype.type(config.factor), f"{output.name}_factor"))
            graph.node.append(helper.make_node("Mul", [inner, f"{output.name}_factor"], [output.name], name=f"{output.name}_scale"))
        return module


class FloorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    floor: float = 0.0


class ReluAsMaximum(Pass):
    """Relax stage: relu(x) rewritten as maximum(x, floor): the same model when floor is 0."""

    name = "relu-as-maximum"
    stage = "relax"
    config_model = FloorConfig

    def run(self, module, config: FloorConfig):
        import tvm
        from tvm import relax

        @relax.expr_functor.mutator
        class Rewrite(relax.PyExprMutator):
            def visit_call_(self, call):  # noqa: N802 - TVM's visitor naming
                call = super().visit_call_(call)
                if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.relu":
                    return relax.op.maximum(call.args[0], relax.const(config.floor, str(call.args[0].ty.dtype)))
                return call

        functions = {var: Rewrite().visit_expr(function) if isinstance(function, relax.Function) else function for var, function in module.functions.items()}
        return tvm.IRModule(functions, attrs=module.attrs)


@hookimpl
def edgesdk_passes():
    return [ScaleOutputs(), ReluAsMaximum()]
