"""`adagrad fit` and `adagrad predict`: linear models on users' files, streamed in chunks.

The parser and the error handling; the work is in `adagrad.textfiles.training`, imported
only when a command runs (it needs the ``linear`` extra).
"""

from __future__ import annotations

import importlib.util
import sys

from adagrad.linear.losses import CLASSIFICATION_LOSSES, REGRESSION_LOSSES
from adagrad import members
from adagrad.textfiles.readers import FORMATS, InputError

EXTRA = ("sklearn", "scipy")  # the `linear` extra: pip install 'adagrad[linear]'
DEFAULT_LR = 0.1


def add_fit_commands(subcommands) -> None:
    """Register ``fit`` and ``predict`` on the top-level parser's subcommands."""
    fit = subcommands.add_parser("fit", help="train a linear model on a file",
                                 description=__doc__.split("\n\n")[0])
    fit.add_argument("train", metavar="TRAIN",
                     help="the training file: svmlight/libsvm, TSV (label<TAB>text) or CSV with a header")
    fit.add_argument("--test", metavar="TEST",
                     help="a test file in the same format: its metrics are printed too (default: none)")
    fit.add_argument("-o", "--output", metavar="MODEL", default="model.adagrad.npz",
                     help="where the model is written, an .npz without pickles (default: %(default)s)")
    fit.add_argument("--format", choices=FORMATS, default="auto",
                     help="the file format; auto reads the extension, else the first line "
                          "(default: %(default)s)")
    fit.add_argument("--label-column", metavar="NAME",
                     help="CSV: the label column (default: a column named label, class, target, ..., "
                          "else the first)")
    fit.add_argument("--text-column", metavar="NAME",
                     help="CSV: the text column (default: a column named text, review, document, ..., "
                          "else the next)")
    fit.add_argument("--loss", choices=("auto", *CLASSIFICATION_LOSSES, *REGRESSION_LOSSES),
                     default="auto",
                     help="the loss; auto: squared_error for numeric labels with more than 20 "
                          "distinct values, else log_loss (default: %(default)s)")
    fit.add_argument("--optimizer", choices=members.keys(),
                     help="a member of the family (default: adagrad, proximal_adagrad with "
                          "--l1)")
    fit.add_argument("--lr", type=float, default=None,
                     help=f"the learning rate (default {DEFAULT_LR}; for a learning-rate-free "
                          f"member, its multiplier, by default the member's own)")
    fit.add_argument("--epochs", type=int, default=10,
                     help="passes over the training file (default: %(default)s)")
    fit.add_argument("--l1", type=float, default=0.0,
                     help="L1 penalty: weights become exactly zero (default: %(default)s)")
    fit.add_argument("--l2", type=float, default=1e-6,
                     help="L2 penalty (default: %(default)s)")
    fit.add_argument("--bits", type=int, default=20,
                     help="text is hashed into 2**BITS features (default: %(default)s)")
    fit.add_argument("--ngrams", type=int, default=1,
                     help="text: word n-grams up to this length (default: %(default)s)")
    fit.add_argument("--no-idf", dest="idf", action="store_false",
                     help="text: plain sublinear tf, without idf weights (default: tf-idf)")
    fit.add_argument("--cache-mb", type=float, default=2048,
                     help="keep the hashed rows in memory up to this size; larger files are read "
                          "again every pass (default: %(default)s)")
    fit.add_argument("--seed", type=int, default=0,
                     help="seed of the order in which the examples are visited (default: %(default)s)")
    fit.add_argument("--json", action="store_true",
                     help="end with one JSON line of the metrics on stdout (default: a table)")
    fit.set_defaults(run=run_fit)
    predict = subcommands.add_parser("predict", help="predict with a model from adagrad fit")
    predict.add_argument("model", metavar="MODEL", help="a model file written by adagrad fit")
    predict.add_argument("file", metavar="FILE",
                         help="the file to predict, in the training file's format (labels not needed)")
    predict.add_argument("-o", "--output", metavar="OUT",
                         help="write one prediction per line to OUT (default: stdout)")
    predict.set_defaults(run=run_predict)


def _reporting_errors(command: str, args) -> int:
    """Run ``command``, turning a bad file or argument into one line on stderr, exit 1."""
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        print(f"adagrad {command}: error: needs {', '.join(missing)}: pip install "
              "'adagrad[linear]'", file=sys.stderr)
        return 1
    from adagrad.textfiles import training

    try:
        return getattr(training, command)(args)
    except (InputError, ValueError) as exc:  # ValueError: a setting the optimizer refuses
        print(f"adagrad {command}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1


def _resolve_member_options(args) -> str | None:
    """Fill in ``--lr`` from the chosen member; the one-line error of an option the member
    refuses, or None."""
    member = members.BY_KEY.get(args.optimizer) if args.optimizer else None
    if args.lr is None:
        args.lr = member.defaults["lr"] if member is not None and member.lr_free else DEFAULT_LR
    if member is not None and not member.l1 and args.l1 > 0:
        return (f"--l1 needs an optimizer with an L1 step ({', '.join(members.keys(l1=True))}); "
                f"--optimizer {member.key} has none")
    return None


def run_fit(args) -> int:
    refused = _resolve_member_options(args)
    if refused is not None:
        print(f"adagrad fit: error: {refused}", file=sys.stderr)
        return 1
    return _reporting_errors("fit", args)


def run_predict(args) -> int:
    return _reporting_errors("predict", args)
