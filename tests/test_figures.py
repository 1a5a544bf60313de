"""reporting.figures.drawn_in_children: figures written by forked children, same bytes, and
every failure of a child made good by the caller."""

import os
import time

import numpy as np
import pytest

from xdistill_jax.reporting import figures

pytestmark = pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')


def _figure(seed=0):
  fig = figures.figure((4, 3))
  ax = fig.add_subplot()
  ax.plot(np.random.default_rng(seed).random(20), label='a curve')
  ax.set(title='title', xlabel='x')
  ax.legend()
  return fig


def _patch_savefig(monkeypatch, in_child):
  """Figure.savefig replaced by `in_child(original, *args)` in forked children only."""
  import matplotlib.figure
  parent, original = os.getpid(), matplotlib.figure.Figure.savefig

  def savefig(self, *args, **kwargs):
    if os.getpid() != parent:
      return in_child(lambda: original(self, *args, **kwargs))
    return original(self, *args, **kwargs)
  monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', savefig)


def test_children_write_the_bytes_the_caller_would(tmp_path):
  figures.write(_figure(), tmp_path / 'here.png', left=0.1)
  with figures.drawn_in_children():
    paths = [figures.write(_figure(), tmp_path / 'child.png', left=0.1),
             figures.write(_figure(1), tmp_path / 'child_1.png', left=0.1)]
    assert len(figures._pending) == 2  # handed over, not yet waited for
  assert paths == [str(tmp_path / 'child.png'), str(tmp_path / 'child_1.png')]
  assert (tmp_path / 'child.png').read_bytes() == (tmp_path / 'here.png').read_bytes()
  assert (tmp_path / 'child_1.png').read_bytes() != (tmp_path / 'here.png').read_bytes()
  assert figures._pending is None
  with pytest.raises(ChildProcessError):
    os.waitpid(-1, os.WNOHANG)  # every child reaped


def test_pyplot_figures_too(tmp_path):
  plt = figures.plt
  fig, ax = plt.subplots()
  ax.plot([0, 1], [1, 0])
  with figures.drawn_in_children():
    figures.save(fig, tmp_path / 'pyplot.png')
  assert (tmp_path / 'pyplot.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert not plt.get_fignums()  # closed in the caller


def test_a_failed_child_is_made_good_by_the_caller(tmp_path, monkeypatch):
  figures.write(_figure(), tmp_path / 'here.png')

  def fail(_):
    raise OSError('disk full (in the child only)')
  _patch_savefig(monkeypatch, fail)
  with figures.drawn_in_children():
    figures.write(_figure(), tmp_path / 'child.png')
  assert (tmp_path / 'child.png').read_bytes() == (tmp_path / 'here.png').read_bytes()


def test_an_error_everywhere_is_raised_by_the_block(tmp_path, monkeypatch):
  import matplotlib.figure

  def savefig(self, *args, **kwargs):
    raise ValueError('no such format')
  monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', savefig)
  with pytest.raises(ValueError, match='no such format'):
    with figures.drawn_in_children():
      figures.write(_figure(), tmp_path / 'child.png')
  assert figures._pending is None


def test_a_hung_child_is_killed_at_the_time_limit(tmp_path, monkeypatch):
  figures.write(_figure(), tmp_path / 'here.png')
  _patch_savefig(monkeypatch, lambda draw: time.sleep(60))
  start = time.monotonic()
  with figures.drawn_in_children(timeout_s=0.5):
    figures.write(_figure(), tmp_path / 'child.png')
  assert time.monotonic() - start < 30
  assert (tmp_path / 'child.png').read_bytes() == (tmp_path / 'here.png').read_bytes()
  with pytest.raises(ChildProcessError):
    os.waitpid(-1, os.WNOHANG)


def test_a_nested_block_is_part_of_the_outer_one(tmp_path):
  with figures.drawn_in_children():
    with figures.drawn_in_children():
      figures.write(_figure(), tmp_path / 'inner.png')
    assert len(figures._pending) == 1  # the outer block waits for it
  assert (tmp_path / 'inner.png').exists() and figures._pending is None


def test_no_child_to_be_had_writes_in_the_caller(tmp_path, monkeypatch):
  figures.write(_figure(), tmp_path / 'here.png')

  def fork():
    raise OSError(12, 'Cannot allocate memory')
  monkeypatch.setattr(os, 'fork', fork)
  with figures.drawn_in_children():
    figures.write(_figure(), tmp_path / 'caller.png')
    assert figures._pending == []
  assert (tmp_path / 'caller.png').read_bytes() == (tmp_path / 'here.png').read_bytes()
