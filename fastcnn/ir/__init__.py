"""Graph IR: the one representation every importer produces and every later stage consumes."""
from fastcnn.ir.graph import Graph, Node, TensorSpec, ValueType

__all__ = ["Graph", "Node", "TensorSpec", "ValueType"]
