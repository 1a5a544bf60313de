"""Every user error through the real `xdistill` console script: exit status 2, one line
`xdistill: error: ...` on stderr, no traceback, and no work directory written."""

import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
XDISTILL = (shutil.which('xdistill', path=str(pathlib.Path(sys.executable).parent))
            or shutil.which('xdistill'))
OVERLAP = '--config=configs/ntdh_overlap.py'


def _xdistill(*args, cwd=ROOT):
  assert XDISTILL, 'the xdistill console script is not installed (pip install -e .)'
  env = os.environ | {'JAX_PLATFORMS': 'cpu'}
  return subprocess.run([XDISTILL, *args], cwd=cwd, capture_output=True, text=True, env=env,
                        timeout=300)


def _assert_user_error(result, *fragments):
  lines = result.stderr.splitlines()
  assert result.returncode == 2, result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  assert len(lines) == 1 and lines[0].startswith('xdistill: error: '), result.stderr
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  """Paths used by the cases: a config without get_config, a config that raises, an empty
  workdir, a workdir with config.json but no chunks, analyze inputs."""
  from xdistill_jax import config_files
  tmp_path = tmp_path_factory.mktemp('cli')
  (tmp_path / 'no_get_config.py').write_text('x = 1\n')
  (tmp_path / 'raises.py').write_text('def get_config():\n  raise ValueError("boom")\n')
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'no_chunks').mkdir()
  (tmp_path / 'no_chunks' / 'config.json').write_text(
      json.dumps({'config': json.loads(config_files.load('ntdh_overlap').to_json_best_effort())}))
  (tmp_path / 'corrupt').mkdir()
  (tmp_path / 'corrupt' / 'config.json').write_text('{not json')
  rng = np.random.default_rng(0)
  np.save(tmp_path / 't.npy', rng.normal(size=(20, 3)))
  np.save(tmp_path / 's.npy', rng.normal(size=(20, 3)))
  np.save(tmp_path / 's_short.npy', rng.normal(size=(19, 3)))
  np.save(tmp_path / 'y.npy', rng.integers(0, 3, 20))
  (tmp_path / 'garbage.npy').write_bytes(b'\x00not an npy file')
  (tmp_path / 'a_file').write_text('')
  return tmp_path


CASES = {
    # name: (argv with {d} = the files directory, fragments the one line must contain)
    'misspelt_override': (['run', OVERLAP, '--workdir={d}/w', '--config.runz=3'],
                          ['config.runz', 'Did you mean config.runs']),
    'misspelt_nested_override': (['run', OVERLAP, '--workdir={d}/w',
                                  '--config.sweep.chunksize=3'],
                                 ['config.sweep.chunksize', 'config.sweep.chunk_size']),
    'override_value_of_wrong_type': (['run', OVERLAP, '--workdir={d}/w', '--config.runs=abc'],
                                     ['--config.runs=abc']),
    'invalid_value': (['run', OVERLAP, '--workdir={d}/w', '--config.overlaps=(0,11)'],
                      ['config.overlaps', 'integers in [0, 10]']),
    'unknown_experiment': (['run', OVERLAP, '--workdir={d}/w',
                            '--config.experiment=ntdh_overlop'], ['config.experiment']),
    'missing_config_file': (['run', '--config=configs/nosuch.py', '--workdir={d}/w'],
                            ['configs/nosuch.py', 'not a file']),
    'config_without_get_config': (['run', '--config={d}/no_get_config.py', '--workdir={d}/w'],
                                  ['no_get_config.py', 'get_config']),
    'config_that_raises': (['run', '--config={d}/raises.py', '--workdir={d}/w'],
                           ['raises.py', 'ValueError', 'boom']),
    'bound_module_not_importable': (['run', OVERLAP, '--workdir={d}/w',
                                     '--config.bound_modules=("nosuchmod",)'],
                                    ['config.bound_modules', 'nosuchmod']),
    'unknown_bound': (['run', OVERLAP, '--workdir={d}/w', '--config.bounds=("n9",)'],
                      ['config.bounds', 'n9']),
    'save_params_unsupported': (['run', '--config=configs/ntdh_feature_mask.py',
                                 '--workdir={d}/w', '--config.sweep.save_params=(1,)'],
                                ['config.sweep.save_params', 'ntdh_feature_mask']),
    'save_params_out_of_range': (['run', OVERLAP, '--workdir={d}/w',
                                  '--config.sweep.save_params=(100000,)'],
                                 ['config.sweep.save_params', 'setting indices in [0, ']),
    'plot_missing_workdir': (['plot', '--workdir={d}/missing'], ['missing', 'config.json']),
    'plot_empty_workdir': (['plot', '--workdir={d}/empty'], ['empty', 'config.json']),
    'plot_without_chunks': (['plot', '--workdir={d}/no_chunks'],
                            ['no_chunks', 'no finished settings']),
    'plot_corrupt_record': (['plot', '--workdir={d}/corrupt'], ['config.json']),
    'workdir_is_a_file': (['run', OVERLAP, '--workdir={d}/a_file'], ['a_file', 'not a directory']),
    'run_without_workdir': (['run', OVERLAP], ['--workdir is required']),
    'plot_without_workdir': (['plot'], ['--workdir is required']),
    'run_without_config': (['run', '--workdir={d}/w'], ['--config is required']),
    'positional_argument': (['run', OVERLAP, '--workdir={d}/w', 'extra'],
                            ['unexpected arguments: extra']),
    'unknown_flag': (['run', OVERLAP, '--workdir={d}/w', '--nosuchflag'], ['nosuchflag']),
    'misspelt_negated_bool': (['run', OVERLAP, '--workdir={d}/w', '--noconfig.sweep.progres'],
                              ['config.sweep.progres', 'config.sweep.progress']),
    'process_id_not_below_num_processes': (
        ['run', OVERLAP, '--workdir={d}/w', '--coordinator_address=127.0.0.1:1234',
         '--num_processes=2', '--process_id=2'], ['--process_id=2', '[0, 1]']),
    'negative_process_id': (['run', OVERLAP, '--workdir={d}/w',
                             '--coordinator_address=127.0.0.1:1234', '--num_processes=2',
                             '--process_id=-1'], ['--process_id=-1', '[0, 1]']),
    'negative_num_processes': (['run', OVERLAP, '--workdir={d}/w',
                                '--coordinator_address=127.0.0.1:1234', '--num_processes=-2',
                                '--process_id=0'], ['--num_processes=-2', '>= 1']),
    'process_id_without_coordinator': (['run', OVERLAP, '--workdir={d}/w', '--process_id=0'],
                                       ['--process_id given without', '--coordinator_address']),
    'coordinator_without_port': (['run', OVERLAP, '--workdir={d}/w',
                                  '--coordinator_address=localhost', '--num_processes=2',
                                  '--process_id=0'], ['--coordinator_address=localhost',
                                                      'HOST:PORT']),
    'process_flags_with_plot': (['plot', '--workdir={d}/no_chunks', '--distributed'],
                                ['--distributed applies to xdistill run only']),
    'heartbeat_timeout_zero': (['run', OVERLAP, '--workdir={d}/w', '--heartbeat_timeout=0'],
                               ['--heartbeat_timeout=0', 'seconds >= 1']),
    'shard_out_of_range': (['run', OVERLAP, '--workdir={d}/w', '--shard=3/3'],
                           ['--shard=3/3', 'out of range', '0 <= I < N']),
    'shard_of_zero': (['run', OVERLAP, '--workdir={d}/w', '--shard=0/0'],
                      ['--shard=0/0', 'out of range']),
    'shard_malformed': (['run', OVERLAP, '--workdir={d}/w', '--shard=1of4'],
                        ['--shard=1of4', 'malformed', 'I/N']),
    'shard_negative': (['run', OVERLAP, '--workdir={d}/w', '--shard=-1/4'],
                       ['--shard=-1/4', 'malformed']),
    'shard_with_plot': (['plot', '--workdir={d}/no_chunks', '--shard=0/2'],
                        ['--shard applies to xdistill run only']),
    'unknown_command': (['frob'], ["unknown command 'frob'", 'run, plot, analyze']),
    'no_command': ([], ['no command']),
    'analyze_missing_file': (['analyze', '--teacher={d}/nope.npy', '--student={d}/s.npy',
                              '--labels={d}/y.npy', '--workdir={d}/a'], ['nope.npy', 'not found']),
    'analyze_unreadable_file': (['analyze', '--teacher={d}/garbage.npy', '--student={d}/s.npy',
                                 '--labels={d}/y.npy', '--workdir={d}/a'], ['garbage.npy']),
    'analyze_mismatched_rows': (['analyze', '--teacher={d}/t.npy', '--student={d}/s_short.npy',
                                 '--labels={d}/y.npy', '--workdir={d}/a'],
                                ['s_short.npy', 'shape mismatch']),
    'analyze_missing_input': (['analyze', '--teacher={d}/t.npy', '--workdir={d}/a'],
                              ['missing input', 'student']),
    'analyze_without_workdir': (['analyze', '--teacher={d}/t.npy'], ['--workdir']),
    'analyze_unknown_flag': (['analyze', '--workdir={d}/a', '--nosuch=1'], ['--nosuch']),
    'analyze_bad_number': (['analyze', '--workdir={d}/a', '--delta=x'], ['--delta']),
}


@pytest.fixture(scope='module')
def results(files):
  """Every case's CompletedProcess; the cases run a few at a time (each is a fresh process)."""
  with concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
    futures = {name: pool.submit(_xdistill, *[a.format(d=files) for a in argv])
               for name, (argv, _) in CASES.items()}
    return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize('name', list(CASES))
def test_user_error_is_one_line_with_status_2(files, results, name):
  _assert_user_error(results[name], *[f.format(d=files) for f in CASES[name][1]])
  assert not (files / 'w').exists()  # failed before writing (or compiling) anything
  assert not (files / 'a').exists()


def test_help_is_not_an_error():
  result = _xdistill('--help')
  assert result.returncode == 0 and 'usage: xdistill' in result.stdout and not result.stderr
  for command in ('run', 'analyze'):
    result = _xdistill(command, '--help')
    assert result.returncode == 0 and 'Traceback' not in result.stderr, result.stderr
