"""Student networks (scene coordinate regressors), their registry and the `.kd3d` scene model file.

Public API:
    get_architecture(name) / list_architectures() / register_architecture(Architecture(...))
    save_scene_model(path, net, meta) / read_model_meta(path) / load_network(path, device)
    load_scene_model(path, device="auto") -> SceneModel (a kd3d_core.prediction.ScenePredictor)

Torch is imported by the submodules that need it; `registry` alone is torch-free.
"""
from __future__ import annotations

from kd3d_core.students.registry import (Architecture, cell_centres, config_from_dict, config_to_dict,
                                         get_architecture, list_architectures, register_architecture)

__all__ = ["Architecture", "cell_centres", "config_from_dict", "config_to_dict", "get_architecture",
           "list_architectures", "register_architecture", "load_scene_model", "SceneModel", "ModelMeta",
           "save_scene_model", "read_model_meta", "load_network"]


def __getattr__(name: str):
    # Lazy access to the torch-dependent parts, so `import kd3d_core.students` stays light.
    if name in ("load_scene_model", "SceneModel", "DeployModule"):
        from kd3d_core.students import scene_model

        return getattr(scene_model, name)
    if name in ("ModelMeta", "save_scene_model", "read_model_meta", "load_network", "FORMAT_VERSION"):
        from kd3d_core.students import model_file

        return getattr(model_file, name)
    raise AttributeError(name)
