"""The command line every dataset's train.py shares: its arguments, its exit codes, and the
summary line it prints.

    python <dataset>/train.py [key=value ...] [--preset NAME]   # a new run
    python <dataset>/train.py --resume RUN_DIR                  # continue a stopped run
    python <dataset>/train.py --evaluate RUN_DIR                # metrics, pictures, report.md
"""

import argparse
import signal
import sys

from common import distributed
from common.errors import Preempted, TrainingDiverged, UserError

PREEMPTED = 3  # exit code: stopped on SIGTERM/SIGUSR1 after writing a checkpoint

SUMMARY_KEYS = ("test/cluster_acc@0.99", "test/cluster_accept@0.99", "test/rel_acc_latent",
                "test/rel_accept_latent", "test/rel_acc_data", "test/rel_acc_decoded",
                "test/recon_loss", "wall_time_s")


def parse_args(dataset: str, presets: dict, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"{dataset}/train.py",
        description=f"Weak disentanglement on {dataset}.",
        epilog="Overrides are dotted config keys, e.g. train.relational_epochs=40 model.z_dim=8",
    )
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--preset", choices=sorted(presets), help="a named set of overrides")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run")
    action.add_argument("--evaluate", metavar="RUN_DIR",
                        help="recompute every metric, picture and report.md of a run")
    # intermixed: overrides may stand on both sides of --preset (plain parse_args takes the
    # overrides before it and calls the ones after it unrecognised)
    args = parser.parse_intermixed_args(argv)
    if (args.resume or args.evaluate) and (args.overrides or args.preset):
        parser.error("--resume/--evaluate use the run's saved config.json; drop the overrides")
    return args


def print_summary(results: dict) -> None:
    print("  ".join(f"{k}={results[k]:.4g}" for k in SUMMARY_KEYS if k in results))


class StopSignals:
    """SIGTERM (how schedulers pre-empt, seconds before SIGKILL) and SIGUSR1 (which SLURM can
    send ahead of the time limit, `--signal=USR1@120`) ask the run to stop at the next step
    boundary, after a checkpoint, instead of dying mid-epoch. `received` names the signal."""

    def __init__(self):
        self.received = None

    def install(self) -> "StopSignals":
        for signum in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name


def run(main) -> int:
    """Call main() with the exit codes the README promises: 0 done, 1 diverged or disk trouble
    (the last checkpoint is intact), 2 bad input, 3 pre-empted (a checkpoint was written),
    130 interrupted."""
    try:
        code = main()
        distributed.shutdown()
        return code
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Preempted as err:
        print(f"stopped: {err}", file=sys.stderr)
        return PREEMPTED
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}; the last good checkpoint is kept", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. disk full: atomic writes leave the last checkpoint whole
        print(f"error: {err.strerror or err} while writing {err.filename or 'the run folder'}; "
              "the last checkpoint is intact: free space, then continue with --resume RUN_DIR",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130
