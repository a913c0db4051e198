"""`ros2 run kd3d_ros relocalizer_lifecycle_node`: the relocalizer as a managed (lifecycle) node, so nav2's
lifecycle manager can bring it up with the rest of the stack.

Transitions: the node declares its parameters when created (set them with --params-file / -p as usual);
configure validates them and loads the model (a bad model or parameter fails the transition with one error
line and leaves the node unconfigured); activate subscribes to the camera and starts localizing; deactivate
unsubscribes; cleanup drops the model. Publishers, diagnostics and ~/relocalize exist from configure on
(~/relocalize answers "not active" while inactive). Everything after configure is the plain node's
`RelocalizerIO`, so both behave alike.
"""
from __future__ import annotations

import sys
from typing import Any

from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn

from kd3d_core.errors import Kd3dError
from kd3d_core.localization import Relocalizer
from kd3d_ros.relocalizer_node import (
    NODE_NAME,
    RelocalizerIO,
    declare_parameters,
    import_tf2_ros,
    load_relocalizer,
    read_config,
    run_node,
    warn_on_world_frame,
)


class RelocalizerLifecycleNode(LifecycleNode):
    """The relocalizer as a managed node (see module docstring).

    Args:
        relocalizer: an engine to use instead of loading `model_path` at configure (tests).
        **node_kwargs: forwarded to rclpy's lifecycle Node (parameter_overrides, namespace, context, ...).

    Raises:
        ConfigError: a parameter of the wrong type (range and consistency are checked at configure).
    """

    def __init__(self, relocalizer: Relocalizer | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        declare_parameters(self)
        self._given = relocalizer
        self.io: RelocalizerIO | None = None

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Validate the parameters, load the model, create publishers, diagnostics and ~/relocalize."""
        try:
            config = read_config(self)
            tf2_ros = import_tf2_ros(config)
            relocalizer = self._given if self._given is not None else load_relocalizer(config)
        except Kd3dError as err:
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        warn_on_world_frame(self, relocalizer, config)
        self.io = RelocalizerIO(self, config, relocalizer, tf2_ros)
        self.get_logger().info(f"configured: {config.model_path} on {config.device.value}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Subscribe to the camera and start the worker."""
        self.io.start()
        self.get_logger().info(f"active: localizing {self.io.config.input_topic}")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Unsubscribe and stop the worker."""
        self.io.stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Drop publishers, service and model."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Release everything, whatever the state."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """Release everything and go back to unconfigured."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        if self.io is not None:
            self.io.destroy()
            self.io = None

    def destroy_node(self) -> None:
        """Stop the worker (if running), then the node."""
        self._release()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run kd3d_ros relocalizer_lifecycle_node` (starts unconfigured)."""
    return run_node(RelocalizerLifecycleNode, args)


if __name__ == "__main__":
    sys.exit(main())
