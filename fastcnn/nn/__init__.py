"""Build CNNs in Python and load their weights from arrays (Caffe, MATLAB, DeepLearnToolbox,
papers' released weights...), including layers exchange formats lack: min, L2 and stochastic
pooling, maxout, local response normalisation.

    from fastcnn.nn import Sequential, Conv2D, AvgPool2D, Flatten, Dense
    net = Sequential([Conv2D(6, 5, activation="tanh"), AvgPool2D(2), Flatten(), Dense(10)],
                     input_shape=(1, 32, 32))
    net.load_weights({"conv1.weight": w, "conv1.bias": b, "dense1.weight": ..., ...})  # or an .npz
    model = net.compile()          # a fastcnn.Model: model(x) with x of shape (N, 1, 32, 32)

Layout is NCHW. Weights are "<layer>.weight" / "<layer>.bias": conv (C_out, C_in/groups, kH, kW),
dense (out, in) as PyTorch's nn.Linear (y = x @ weight.T + bias).
"""
from fastcnn.nn.layers import (LRN, Activation, AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                               GlobalAvgPool2D, GlobalMaxPool2D, L2Pool2D, Layer, Maxout, MaxPool2D,
                               MinPool2D, PReLU, StochasticPool2D)
from fastcnn.nn.sequential import Sequential

__all__ = ["Sequential", "Layer", "Conv2D", "Dense", "Flatten", "Activation", "BatchNorm2D", "Dropout",
           "MaxPool2D", "MinPool2D", "AvgPool2D", "L2Pool2D", "StochasticPool2D", "GlobalAvgPool2D",
           "GlobalMaxPool2D", "Maxout", "LRN", "PReLU"]
