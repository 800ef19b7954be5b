"""`FineTuner`: adapt a loaded classifier's last layer(s) on the device, no training framework.

    tuner = fastcnn.FineTuner(model, num_classes=10)       # 8-class model learns 2 new classes
    history = tuner.fit(x, y, epochs=20, validation=(xv, yv), early_stopping=5)
    tuner.model.save("tuned.fcnn")

The model is cut at its head (see `head.find_head`). Everything before the head is frozen: its
output features are computed once per `fit` call, in batches, and cached, so an epoch costs only
the head's forward and backward (Cython kernels in `fastcnn._kernels.train`). With augmentation
the trunk runs again on every augmented batch instead.

Randomness is seeded: head initialisation draws from np.random.default_rng([seed, 0]), the
sample order of each epoch is default_rng([seed, 1]).permutation(N) (one draw per epoch, one
generator per FineTuner), augmentation draws from default_rng([seed, 2]).
"""
from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np

from fastcnn.errors import FineTuneError
from fastcnn.finetune.augment import Augmenter, parse_augment
from fastcnn.finetune.features import Trunk, check_inputs, run_batched
from fastcnn.finetune.graphs import tuned_graph
from fastcnn.finetune.head import find_head
from fastcnn.finetune.losses import LOSSES, class_weight_vector
from fastcnn.finetune.network import HeadNetwork
from fastcnn.finetune.optim import OPTIMIZERS, SCHEDULES
from fastcnn.finetune.progress import EpochBar
from fastcnn.model import Model

# Most activation values (rows x widest layer) the head holds at once when evaluating: bounds
# the buffers of 1x1-conv heads, whose samples have one row per spatial position.
EVAL_VALUES = 1 << 22


class FineTuneWarning(UserWarning):
    """Something about fine-tuning the user should know (e.g. the feature cache is off)."""


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise FineTuneError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_float(name, value, low, strict):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FineTuneError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < low or (strict and v == low):
        raise FineTuneError(f"{name} must be a finite number {'>' if strict else '>='} {low}, got {value!r}")
    return v


def _choice(name, value, table):
    if value not in table:
        raise FineTuneError(f"{name} must be one of {', '.join(map(repr, table))}; got {value!r}")
    return value


class FineTuner:
    """Fine-tune the head of `model` (a fastcnn Model, or a path to load).

    num_classes:  classes of the tuned head (None: as the model has).
    keep_classes: True keeps the trained rows of the classes kept and initialises new ones
                  (normal with the existing weights' standard deviation, bias = their mean
                  bias); False re-initialises the last layer (Glorot uniform, zero bias). Hidden
                  trainable layers (train_layers > 1) always start from their trained weights.
    head:         None to find the last dense layer, or the name of its node.
    train_layers: how many dense layers, counted back from the last, are trained.
    loss:         "softmax_cross_entropy", "sigmoid_cross_entropy" or "mse" (see losses.py).
    optimizer:    "adam" (AdamW-style decoupled weight decay) or "sgd" (momentum, nesterov;
                  L2 weight decay added to the gradient). See optim.py.
    lr_schedule:  "constant", "step" (x lr_gamma every lr_step_size epochs; default a third of
                  the epochs) or "cosine" (to lr_min * lr), per epoch of each fit call.
    labels:       class names saved in the tuned model's metadata["labels"]. By default the
                  model's labels are kept (with keep_classes) and new classes named by index.
    """

    def __init__(self, model, num_classes=None, keep_classes=True, head=None, train_layers=1,
                 loss="softmax_cross_entropy", optimizer="adam", lr=1e-3, weight_decay=0.0, seed=0,
                 labels=None, *, momentum=0.9, nesterov=False, betas=(0.9, 0.999), eps=1e-8,
                 lr_schedule="constant", lr_step_size=None, lr_gamma=0.1, lr_min=0.0,
                 num_threads=None):
        if isinstance(model, (str, os.PathLike)):
            from fastcnn.loading import load
            model = load(model, num_threads=num_threads)
        if not isinstance(model, Model):
            raise FineTuneError(f"model must be a fastcnn.Model or a model file path, got "
                                f"{type(model).__name__}")
        where = model.graph.where()
        if len(model.inputs) != 1:
            raise FineTuneError(f"{where}: fine-tuning needs a model with one input; this one has "
                                f"{len(model.inputs)} ({', '.join(t.name for t in model.inputs)})")
        self.source = model
        self.where = where
        train_layers = _check_int("train_layers", train_layers, 1)
        self.loss = LOSSES[_choice("loss", loss, LOSSES)]()
        _choice("optimizer", optimizer, OPTIMIZERS)
        self.lr = _check_float("lr", lr, 0.0, strict=True)
        weight_decay = _check_float("weight_decay", weight_decay, 0.0, strict=False)
        self.seed = _check_int("seed", seed, 0)
        self.lr_schedule = _choice("lr_schedule", lr_schedule, SCHEDULES)
        self.lr_step_size = None if lr_step_size is None else _check_int("lr_step_size", lr_step_size, 1)
        self.lr_gamma = _check_float("lr_gamma", lr_gamma, 0.0, strict=True)
        self.lr_min = _check_float("lr_min", lr_min, 0.0, strict=False)
        self.num_threads = model.num_threads if num_threads is None else _check_int("num_threads", num_threads, 1)

        self.spec = find_head(model.graph, head, train_layers)
        old_n = self.spec.num_classes
        n = old_n if num_classes is None else _check_int("num_classes", num_classes, 1)
        self.keep_classes = bool(keep_classes)
        self.labels = self._resolve_labels(labels, n, old_n, model.metadata.get("labels"))

        rng = np.random.default_rng([self.seed, 0])
        weights = [l.weight for l in self.spec.layers]
        biases = [l.bias for l in self.spec.layers]
        weights[-1], biases[-1] = self._last_layer(weights[-1], biases[-1], n, rng)
        last = self.spec.layers[-1]
        logits_last = (self.loss.name == "sigmoid_cross_entropy" and last.activation == "Sigmoid"
                       and self.spec.positions == 1)
        self.net = HeadNetwork(weights, biases,
                               [(l.activation, l.alpha, l.beta) for l in self.spec.layers],
                               [l.has_bias for l in self.spec.layers], self.spec.positions,
                               logits_last, self.num_threads)
        params = [p for p, _ in self.net.parameters()]
        if optimizer == "sgd":
            self.optimizer = OPTIMIZERS["sgd"](params, _check_float("momentum", momentum, 0.0, False),
                                               nesterov, weight_decay, self.num_threads)
        else:
            self.optimizer = OPTIMIZERS["adam"](params, betas, eps, weight_decay, self.num_threads)
        self._shuffle_rng = np.random.default_rng([self.seed, 1])
        self._augment_seed = np.random.SeedSequence([self.seed, 2])
        self.trunk = Trunk(model, self.spec, self.num_threads)
        self._graph_for(self.net.get_state())  # the new head must fit the graph: fail now, not later
        self._model = None

    # ------------------------------------------------------------------ set-up helpers
    def _resolve_labels(self, labels, n, old_n, old_labels):
        if labels is not None:
            labels = [str(x) for x in labels]
            if len(labels) != n:
                raise FineTuneError(f"{self.where}: {len(labels)} labels given for {n} classes")
            return labels
        if self.keep_classes and isinstance(old_labels, list) and len(old_labels) == old_n:
            return [str(x) for x in old_labels[:n]] + [str(i) for i in range(len(old_labels), n)]
        return None

    def _last_layer(self, w, b, n, rng):
        """The last layer's (k, n) weight and (n,) bias for n classes (see keep_classes)."""
        k, old_n = w.shape
        if not self.keep_classes:
            limit = math.sqrt(6.0 / (k + n))
            return rng.uniform(-limit, limit, (k, n)).astype(np.float32), np.zeros(n, np.float32)
        keep = min(n, old_n)
        w2 = np.empty((k, n), np.float32)
        b2 = np.empty(n, np.float32)
        w2[:, :keep] = w[:, :keep]
        b2[:keep] = b[:keep]
        if n > keep:
            std = float(w.std()) if w.size > 1 and w.std() > 0 else math.sqrt(2.0 / (k + n))
            w2[:, keep:] = rng.normal(0.0, std, (k, n - keep))
            b2[keep:] = float(b.mean()) if b.size else 0.0
        return w2, b2

    def _graph_for(self, state):
        return tuned_graph(self.source.graph, self.spec, [w for w, _ in state], [b for _, b in state],
                           self.labels)

    # ------------------------------------------------------------------ public API
    @property
    def num_classes(self) -> int:
        return self.net.out_features

    @property
    def model(self) -> Model:
        """The tuned model: a normal fastcnn Model with the current head weights and labels."""
        if self._model is None:
            self._model = Model(self._graph_for(self.net.get_state()), num_threads=self.num_threads)
        return self._model

    def get_weights(self):
        """[(W (k, n), b (n,))] per trained layer, first to last, as copies (training layout:
        in-features by out-features)."""
        return self.net.get_state()

    def set_weights(self, weights):
        """Set the trained layers from [(W (k, n), b (n,))] as get_weights returns them."""
        state = self.net.get_state()
        if len(weights) != len(state):
            raise FineTuneError(f"set_weights: expected {len(state)} (W, b) pairs, got {len(weights)}")
        new = []
        for i, ((w, b), (w2, b2)) in enumerate(zip(state, weights)):
            w2 = np.asarray(w2, np.float32)
            b2 = np.asarray(b2, np.float32)
            if w2.shape != w.shape or b2.shape != b.shape:
                raise FineTuneError(f"set_weights: layer {i} needs W {list(w.shape)} and b "
                                    f"{list(b.shape)}, got {list(w2.shape)} and {list(b2.shape)}")
            new.append((w2, b2))
        self.net.set_state(new)
        self._model = None

    def fit(self, x, y, epochs=20, batch_size=32, validation=None, early_stopping=None,
            augment=None, progress=True, class_weights=None) -> dict:
        """Train the head on x (N, *model input shape) with targets y (see the loss).

        validation:     (x_val, y_val), evaluated after each epoch (plain, unweighted loss).
        early_stopping: patience in epochs on val_loss (needs validation); at the end the
                        weights of the best epoch are restored.
        augment:        None, True (random flip + 10% shift) or {"flip": bool, "shift": px or
                        fraction}; the trunk then runs on each augmented batch (no cache).
        class_weights:  None, "balanced" or one weight per class.
        Returns a history dict: per-epoch lists "loss", "accuracy", "lr" (and "val_loss",
        "val_accuracy"), plus "best_epoch", "stopped_epoch", "feature_seconds", "train_seconds".
        """
        epochs = _check_int("epochs", epochs, 1)
        batch_size = _check_int("batch_size", batch_size, 1)
        patience = None if early_stopping in (None, 0, False) else _check_int("early_stopping", early_stopping, 1)
        n = self.num_classes
        x = check_inputs(x, self.trunk.input, self.where, "x")
        targets = self.loss.targets(y, n, "y")
        if len(targets) != x.shape[0]:
            raise FineTuneError(f"{self.where}: x has {x.shape[0]} samples but y has {len(targets)}")
        val = None
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise FineTuneError("validation must be a pair (x_val, y_val)")
            xv = check_inputs(validation[0], self.trunk.input, self.where, "x_val")
            tv = self.loss.targets(validation[1], n, "y_val")
            if len(tv) != xv.shape[0]:
                raise FineTuneError(f"{self.where}: x_val has {xv.shape[0]} samples but y_val has {len(tv)}")
            val = (xv, tv)
        if patience is not None and val is None:
            raise FineTuneError("early_stopping needs validation data (validation=(x_val, y_val))")
        weights = class_weight_vector(class_weights, targets, n)
        aug_cfg = parse_augment(augment)
        augmenter = None
        if aug_cfg is not None:
            augmenter = Augmenter(aug_cfg, self.trunk.input, self._augment_seed.spawn(1)[0])
            trunk_nodes = len(self.trunk.model.graph.nodes) if self.trunk.model else 0
            warnings.warn(f"augmentation is on: the feature cache is off for the {trunk_nodes} "
                          f"trunk node(s) before '{self.spec.layers[0].node}'; the trunk runs on "
                          f"every augmented batch, every epoch", FineTuneWarning, stacklevel=2)

        t0 = time.perf_counter()
        rows = None if augmenter is not None else self.trunk.rows(x)
        val_rows = self.trunk.rows(val[0]) if val is not None else None
        feature_seconds = time.perf_counter() - t0
        history = {"loss": [], "accuracy": [], "lr": []}
        if val is not None:
            history["val_loss"], history["val_accuracy"] = [], []
        best_loss, best_epoch, best_state, stopped, waited = math.inf, None, None, None, 0
        num = x.shape[0]
        p = self.trunk.rows_per_sample
        k = self.trunk.width
        batch_rows = np.empty((min(batch_size, num), p, k), np.float32)
        grad_bufs = {}
        params_grads = self.net.parameters()
        grads = [g for _, g in params_grads]
        step_size = self.lr_step_size or max(1, epochs // 3)
        t1 = time.perf_counter()
        for epoch in range(epochs):
            lr = self.lr * SCHEDULES[self.lr_schedule](epoch, epochs, step_size, self.lr_gamma, self.lr_min)
            order = self._shuffle_rng.permutation(num)
            bar = EpochBar(epoch + 1, epochs, -(-num // batch_size), progress)
            loss_sum = weight_sum = 0.0
            right = judged = 0
            for start in range(0, num, batch_size):
                idx = order[start:start + batch_size]
                b = len(idx)
                if rows is None:
                    xb = self.trunk.rows(augmenter(x[idx]), batch_size=b)
                else:
                    xb = batch_rows[:b]
                    np.take(rows.reshape(num, p, k), idx, axis=0, out=xb)
                    xb = xb.reshape(b * p, k)
                tb = targets[idx]
                out = self.net.forward(xb, b)
                g = grad_bufs.get(b)
                if g is None:
                    g = grad_bufs[b] = np.empty((b, n), np.float32)
                s, w = self.loss.value_and_grad(out, tb, weights, g, self.num_threads)
                c = self.loss.correct(out, tb)
                loss_sum += s
                weight_sum += w
                if c is not None:
                    right += c[0]
                    judged += c[1]
                self.net.backward(g)
                self.optimizer.step(grads, lr)
                bar.update(s / w if w else 0.0)
            history["loss"].append(loss_sum / weight_sum if weight_sum else 0.0)
            history["accuracy"].append(right / judged if judged else None)
            history["lr"].append(lr)
            metrics = {"loss": history["loss"][-1], "accuracy": history["accuracy"][-1]}
            if val is not None:
                vl, va = self._evaluate_rows(val_rows, val[1])
                history["val_loss"].append(vl)
                history["val_accuracy"].append(va)
                metrics.update(val_loss=vl, val_accuracy=va)
                if vl < best_loss:
                    best_loss, best_epoch, waited = vl, epoch, 0
                    if patience is not None:
                        best_state = self.net.get_state()
                else:
                    waited += 1
            bar.close(metrics)
            if patience is not None and waited >= patience:
                stopped = epoch
                break
        if best_state is not None:
            self.net.set_state(best_state)
        history["best_epoch"] = best_epoch
        history["stopped_epoch"] = stopped
        history["feature_seconds"] = feature_seconds
        history["train_seconds"] = time.perf_counter() - t1
        self._model = None
        return history

    def _evaluate_rows(self, rows, targets):
        """(loss, accuracy or None) of the head on precomputed rows (N * positions, k)."""
        p = self.trunk.rows_per_sample
        num = len(targets)
        widest = max(max(shape) for shape in self.net.shapes)
        chunk = max(1, EVAL_VALUES // (p * widest))
        empty = np.zeros(0, np.float32)
        loss_sum = weight_sum = 0.0
        right = judged = 0
        have_acc = True
        for start in range(0, num, chunk):
            stop = min(num, start + chunk)
            out = self.net.forward(rows[start * p:stop * p], stop - start)
            g = np.empty_like(out)
            s, w = self.loss.value_and_grad(out, targets[start:stop], empty, g, self.num_threads)
            loss_sum += s
            weight_sum += w
            c = self.loss.correct(out, targets[start:stop])
            if c is None:
                have_acc = False
            else:
                right += c[0]
                judged += c[1]
        loss = loss_sum / weight_sum if weight_sum else 0.0
        return loss, (right / judged if have_acc and judged else None)

    def evaluate(self, x, y) -> dict:
        """{"loss": mean loss, "accuracy": fraction right (None for non-class MSE targets)} of
        the current head on x, y."""
        x = check_inputs(x, self.trunk.input, self.where, "x")
        targets = self.loss.targets(y, self.num_classes, "y")
        if len(targets) != x.shape[0]:
            raise FineTuneError(f"{self.where}: x has {x.shape[0]} samples but y has {len(targets)}")
        loss, acc = self._evaluate_rows(self.trunk.rows(x), targets)
        return {"loss": loss, "accuracy": acc}

    def predict(self, x, batch_size=64) -> np.ndarray:
        """The tuned model's output (the one the head feeds, softmax included if the model has
        one) for x (N, *input shape): (N, num_classes)."""
        x = check_inputs(x, self.trunk.input, self.where, "x")
        return run_batched(self.model, x, self.spec.output, batch_size)

    def __repr__(self):
        layers = " -> ".join(f"{l.node}({k}x{n})" for l, (k, n) in zip(self.spec.layers, self.net.shapes))
        return (f"<fastcnn.FineTuner {self.where!r}: head {layers}, {self.num_classes} classes, "
                f"loss {self.loss.name}>")
