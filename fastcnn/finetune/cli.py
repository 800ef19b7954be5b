"""`fastcnn finetune MODEL --data DATA --classes N --epochs E -o OUT.fcnn`

The main CLI registers this command with `add_parser(subparsers)`; `main(args)` runs it. It also
runs on its own: `python -m fastcnn.finetune.cli MODEL --data DATA ...`.

DATA is an .npz with arrays x (samples in the model's input layout) and y (class indices), or a
folder with one subfolder of images per class (see fastcnn.finetune.data). A seeded share of the
data (--val-split) is held out for validation; the summary reports loss and accuracy on it.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from fastcnn.errors import FastCNNError, FineTuneError

HELP = "fine-tune a classifier's last layer(s) on your data and save the result as .fcnn"


def _floats(text):
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _size(text):
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HEIGHTxWIDTH, got {text!r}")
    return tuple(dims)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.onnx, .fcnn, Keras)")
    p.add_argument("--data", required=True, help=".npz with x and y, or a folder of class subfolders")
    p.add_argument("--x-key", default="x", help="npz key of the training samples (default x)")
    p.add_argument("--y-key", default="y", help="npz key of the training labels (default y)")
    p.add_argument("--eval", metavar="NPZ", default=None,
                   help="held-out .npz to report accuracy on before and after fine-tuning")
    p.add_argument("--eval-x-key", default="x_test", help="npz key of held-out samples (default x_test)")
    p.add_argument("--eval-y-key", default="y_test", help="npz key of held-out labels (default y_test)")
    p.add_argument("-o", "--output", required=True, help="where to write the tuned model (.fcnn)")
    p.add_argument("--classes", type=int, default=None,
                   help="classes of the tuned model (default: as many as the data has)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--lr-schedule", choices=("constant", "step", "cosine"), default="constant")
    p.add_argument("--loss", choices=("softmax_cross_entropy", "sigmoid_cross_entropy", "mse"),
                   default="softmax_cross_entropy")
    p.add_argument("--train-layers", type=int, default=1, help="dense layers to train, from the last")
    p.add_argument("--head", default=None, help="name of the head node (default: found automatically)")
    p.add_argument("--reset-classes", action="store_true",
                   help="re-initialise the classifier instead of keeping the trained classes")
    p.add_argument("--labels", default=None, help="comma-separated class names to store in the model")
    p.add_argument("--val-split", type=float, default=0.1, help="share held out for validation")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better validation loss")
    p.add_argument("--augment", action="store_true",
                   help="random horizontal flips and shifts (runs the trunk every epoch)")
    p.add_argument("--class-weights", choices=("balanced",), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    g = p.add_argument_group("image folders")
    g.add_argument("--size", type=_size, default=None, help="resize to SIZE or HxW (default: model input)")
    g.add_argument("--mean", type=_floats, default=None, help="per-channel mean after scaling to [0, 1]")
    g.add_argument("--std", type=_floats, default=None, help="per-channel std after scaling to [0, 1]")
    g.add_argument("--channel-order", choices=("RGB", "BGR"), default="RGB")
    g.add_argument("--layout", choices=("NCHW", "NHWC"), default=None,
                   help="input layout (default: the model's, else NCHW)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_parser(subparsers):
    """Register `finetune` on the main CLI's subparsers; returns the new parser."""
    p = subparsers.add_parser("finetune", help=HELP, description=HELP)
    add_arguments(p)
    p.set_defaults(func=main)
    return p


def _split(n, share, seed):
    """(train indices, validation indices): a seeded permutation, validation first."""
    if not 0.0 <= share < 1.0:
        raise FineTuneError(f"--val-split must be in [0, 1), got {share}")
    order = np.random.default_rng([seed, 3]).permutation(n)
    n_val = int(round(n * share))
    if share > 0 and n_val == 0 and n > 1:
        n_val = 1
    if n - n_val < 1:
        raise FineTuneError(f"{n} samples leave none for training with --val-split {share}")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def run(args, out=sys.stdout) -> None:
    """The command's work; raises FastCNNError on bad input."""
    import fastcnn
    from fastcnn.finetune import data
    from fastcnn.finetune.tuner import FineTuner

    model = fastcnn.load(args.model, num_threads=args.threads)
    old_labels = model.metadata.get("labels") if not args.reset_classes else None
    if os.path.isdir(args.data):
        x, y, names = data.load_image_folder(args.data, model.inputs[0], old_labels, args.size,
                                             args.mean, args.std, args.channel_order, args.layout)
    elif os.path.isfile(args.data):
        x, y = data.load_npz(args.data, args.x_key, args.y_key)
        names = None
    else:
        raise FineTuneError(f"--data {args.data}: no such file or folder")
    y = np.asarray(y)
    if args.loss == "sigmoid_cross_entropy" or y.ndim == 2:
        found = y.shape[1] if y.ndim == 2 else 0
    else:
        found = int(y.max()) + 1 if y.size else 0
    classes = args.classes if args.classes is not None else max(found, len(names or []))
    if classes < found:
        raise FineTuneError(f"--classes {classes}: the data has labels up to {found - 1}")
    labels = args.labels.split(",") if args.labels else None
    if labels is None and names is not None:
        labels = names + [str(i) for i in range(len(names), classes)]
    tuner = FineTuner(model, num_classes=classes, keep_classes=not args.reset_classes,
                      head=args.head, train_layers=args.train_layers, loss=args.loss,
                      optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                      seed=args.seed, labels=labels, momentum=args.momentum,
                      nesterov=args.nesterov, lr_schedule=args.lr_schedule)
    held_out = None
    if args.eval:
        hx, hy = data.load_npz(args.eval, args.eval_x_key, args.eval_y_key)
        held_out = (np.asarray(hx, np.float32), np.asarray(hy).astype(np.int64))
        old_classes = model.outputs[0].shape[-1] if model.outputs[0].shape else None
        _report_held_out("before", model(held_out[0]) if len(hy) else None, held_out[1],
                         old_classes, out)
    train_idx, val_idx = _split(len(y), args.val_split, args.seed)
    validation = (x[val_idx], y[val_idx]) if len(val_idx) else None
    history = tuner.fit(x[train_idx], y[train_idx], epochs=args.epochs, batch_size=args.batch_size,
                        validation=validation, early_stopping=args.early_stopping,
                        augment=True if args.augment else None, progress=not args.no_progress,
                        class_weights=args.class_weights)
    tuner.model.save(args.output)
    layers = ", ".join(l.node for l in tuner.spec.layers)
    ran = len(history["loss"])
    best = history["best_epoch"]
    print(f"fine-tuned {layers} ({tuner.spec.layers[-1].out_features} -> {classes} classes) on "
          f"{len(train_idx)} samples for {ran} epoch(s)"
          + (f", best epoch {best + 1}" if best is not None else ""), file=out)
    print(f"features {history['feature_seconds']:.2f} s, head training "
          f"{history['train_seconds']:.2f} s", file=out)
    if validation is not None:
        result = tuner.evaluate(*validation)
        split = f"validation ({len(val_idx)} samples)"
    else:
        result = tuner.evaluate(x, y)
        split = f"training data ({len(y)} samples, no validation split)"
    acc = result["accuracy"]
    print(f"{split}: loss {result['loss']:.4f}"
          + (f", accuracy {acc:.2%}" if acc is not None else ""), file=out)
    if held_out is not None:
        _report_held_out("after", tuner.predict(held_out[0]), held_out[1], old_classes, out)
    print(f"saved {args.output}", file=out)


def _report_held_out(when, scores, y, old_classes, out):
    """One line: accuracy on held-out samples, split into the model's original classes and the
    classes fine-tuning added."""
    if scores is None:
        return
    pred = np.asarray(scores).argmax(axis=1)
    line = f"held-out {when + ':':7s} {np.mean(pred == y):.2%} of {len(y)}"
    if old_classes and (y >= old_classes).any() and (y < old_classes).any():
        old, new = y < old_classes, y >= old_classes
        line += (f" (original classes 0-{old_classes - 1}: {np.mean(pred[old] == y[old]):.2%}; "
                 f"added classes: {np.mean(pred[new] == y[new]):.2%})")
    print(line, file=out)


def main(args) -> int:
    """Run the command for parsed `args`; returns the exit status (errors go to stderr)."""
    try:
        run(args)
    except FastCNNError as e:
        print(f"fastcnn finetune: error: {e}", file=sys.stderr)
        return 2
    return 0


def _standalone(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastcnn.finetune.cli", description=HELP)
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_standalone())
