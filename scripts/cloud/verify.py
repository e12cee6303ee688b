#!/usr/bin/python3
"""End-to-end check of a seeded rig (`scripts/openstack-cloud verify`).

As the demo user: token; GET /v2.0/networks?name=vmi-dup -> 2; seeded servers
ACTIVE and volumes in-use; forced snapshots of the in-use data and root
volumes of vmi-bfv -> available; volume from the data snapshot -> upload to
Glance as qcow2 -> download -> qemu-img convert to raw -> sha256 of the data
region equals seed.json; createImage of vmi-image-booted -> active image with
the bytes of vmi-cirros; createImage of vmi-bfv (volume-backed); os-stop ->
SHUTOFF -> os-start -> ACTIVE; GET /v2.1/os-networks shows up in
logs/nova-api.log.  Everything it creates is deleted again (seeded objects are
left alone).  Prints one line per check and "N passed, M failed".
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

import osapi

RESULTS = []


def check(name):
    def deco(fn):
        def run(*a, **kw):
            t0 = time.time()
            try:
                detail = fn(*a, **kw)
                RESULTS.append((name, True))
                print('PASS %-34s %5.1fs  %s' % (name, time.time() - t0, detail or ''), flush=True)
                return detail
            except Exception as e:  # noqa
                RESULTS.append((name, False))
                print('FAIL %-34s %5.1fs  %s' % (name, time.time() - t0, e), flush=True)
                if os.environ.get('VMI_VERIFY_DEBUG'):
                    traceback.print_exc()
                return None
        return run
    return deco


def sha256_file(path, limit=None):
    h = hashlib.sha256()
    left = limit
    with open(path, 'rb') as f:
        while True:
            n = 4 << 20 if left is None else min(4 << 20, left)
            if n == 0:
                break
            b = f.read(n)
            if not b:
                break
            h.update(b)
            if left is not None:
                left -= len(b)
    return h.hexdigest()


def download_image(s, image_id, path):
    r = s.request('GET', 'image', '/v2/images/%s/file' % image_id, stream=True, ok=(200,))
    md5 = hashlib.md5()
    with open(path, 'wb') as f:
        for chunk in r.iter_content(4 << 20):
            md5.update(chunk)
            f.write(chunk)
    return md5.hexdigest()


def wait_status(get, want, timeout, what):
    def fn():
        obj = get()
        st = obj['status'].lower()
        if st in want:
            return obj
        if st.startswith('error') or st == 'killed':
            raise osapi.ApiError('%s went to %s' % (what, st))
        return None
    return osapi.wait_for(what + ' ' + '/'.join(want), fn, timeout, 0.5)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--state', required=True)
    a = p.parse_args()
    seed = json.load(open(os.path.join(a.state, 'seed.json')))
    clouds = os.path.join(a.state, 'clouds.yaml')
    cleanup = []  # (kind, id)
    tmp = tempfile.mkdtemp(prefix='vmi-verify-', dir='/var/tmp')
    demo = None

    @check('demo token')
    def t_token():
        nonlocal demo
        demo = osapi.Session(clouds, 'vmi-demo')
        return 'project %s' % demo.project_id
    t_token()
    if demo is None:
        return finish(tmp)
    adm = osapi.Session(clouds, 'vmi-admin')

    def vol(vid):
        return demo.get('volumev3', '/volumes/%s' % vid)['volume']

    def snap(sid):
        return demo.get('volumev3', '/snapshots/%s' % sid)['snapshot']

    def img(iid):
        return demo.get('image', '/v2/images/%s' % iid)

    def server(sid):
        return demo.get('compute', '/servers/%s' % sid)['server']

    @check('networks?name=vmi-dup -> 2')
    def t_dup():
        nets = demo.get('network', '/networks', params={'name': 'vmi-dup'})['networks']
        ids = sorted(n['id'] for n in nets)
        assert len(nets) == 2, 'got %d' % len(nets)
        assert ids == sorted(seed['networks']['vmi-dup']), 'ids differ from seed.json'
        return ', '.join(ids)
    t_dup()

    @check('seeded servers ACTIVE, volumes in-use')
    def t_servers():
        n = 0
        for name, lst in seed['servers'].items():
            for s in lst:
                got = server(s['id'])
                assert got['status'] == 'ACTIVE', '%s is %s' % (name, got['status'])
                for v in s['volumes']:
                    st = vol(v['id'])['status']
                    assert st == 'in-use', 'volume %s is %s' % (v['id'], st)
                n += 1
        return '%d servers' % n
    t_servers()

    data_vol = seed['volumes']['vmi-bfv-data']
    bfv = seed['servers']['vmi-bfv'][0]
    root_vol = [v for v in bfv['volumes'] if v['root']][0]

    state = {}

    @check('snapshot(force) in-use data volume')
    def t_snap_data():
        s = demo.post('volumev3', '/snapshots', {'snapshot': {
            'name': 'vmi-verify-data-snap', 'volume_id': data_vol['id'], 'force': True}})['snapshot']
        cleanup.append(('snapshot', s['id']))
        t0 = time.time()
        wait_status(lambda: snap(s['id']), ('available',), 60, 'snapshot')
        dt = time.time() - t0
        assert dt <= 15, 'took %.1fs' % dt
        state['data_snap'] = s['id']
        return 'available after %.1fs' % dt
    t_snap_data()

    @check('snapshot(force) in-use root volume')
    def t_snap_root():
        s = demo.post('volumev3', '/snapshots', {'snapshot': {
            'name': 'vmi-verify-root-snap', 'volume_id': root_vol['id'], 'force': True}})['snapshot']
        cleanup.append(('snapshot', s['id']))
        t0 = time.time()
        wait_status(lambda: snap(s['id']), ('available',), 60, 'snapshot')
        return 'available after %.1fs' % (time.time() - t0)
    t_snap_root()

    @check('volume from snapshot')
    def t_vol_from_snap():
        v = demo.post('volumev3', '/volumes', {'volume': {
            'name': 'vmi-verify-from-snap', 'size': 1, 'snapshot_id': state['data_snap']}})['volume']
        cleanup.append(('volume', v['id']))
        wait_status(lambda: vol(v['id']), ('available',), 120, 'volume')
        state['snap_vol'] = v['id']
        return v['id']
    if 'data_snap' in state:
        t_vol_from_snap()

    @check('upload volume to glance as qcow2')
    def t_upload():
        r = demo.post('volumev3', '/volumes/%s/action' % state['snap_vol'], {
            'os-volume_upload_image': {'image_name': 'vmi-verify-upload', 'disk_format': 'qcow2',
                                       'container_format': 'bare', 'force': False}})
        iid = r['os-volume_upload_image']['image_id']
        cleanup.append(('image', iid))
        i = wait_status(lambda: img(iid), ('active',), 300, 'image')
        wait_status(lambda: vol(state['snap_vol']), ('available',), 120, 'volume')
        state['upload'] = iid
        return '%s %s bytes' % (iid, i['size'])
    if 'snap_vol' in state:
        t_upload()

    @check('download -> raw -> sha256 of data')
    def t_download():
        q = os.path.join(tmp, 'upload.qcow2')
        raw = os.path.join(tmp, 'upload.raw')
        md5 = download_image(demo, state['upload'], q)
        assert md5 == img(state['upload'])['checksum'], 'download md5 != glance checksum'
        subprocess.run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', q, raw], check=True)
        got = sha256_file(raw, data_vol['data_bytes'])
        assert got == data_vol['data_sha256'], 'sha256 %s != seed %s' % (got, data_vol['data_sha256'])
        return 'first %d bytes match (%s...)' % (data_vol['data_bytes'], got[:16])
    if 'upload' in state:
        t_download()

    @check('delete snapshots of in-use volumes')
    def t_del_snaps():
        for kind, cid in list(cleanup):
            if kind == 'volume':
                demo.delete('volumev3', '/volumes/%s' % cid)
                osapi.wait_for('volume deleted', lambda: demo.request(
                    'GET', 'volumev3', '/volumes/%s' % cid, ok=(200, 404), raw=True
                ).status_code == 404, 120, 0.5)
                cleanup.remove((kind, cid))
        for kind, cid in list(cleanup):
            if kind == 'snapshot':
                demo.delete('volumev3', '/snapshots/%s' % cid)
                osapi.wait_for('snapshot deleted', lambda: demo.request(
                    'GET', 'volumev3', '/snapshots/%s' % cid, ok=(200, 404), raw=True
                ).status_code == 404, 120, 0.5)
                cleanup.remove((kind, cid))
        for v in (data_vol['id'], root_vol['id']):
            assert vol(v)['status'] == 'in-use', 'volume %s not in-use after snapshot delete' % v
        return 'deleted; volumes still in-use'
    t_del_snaps()

    @check('createImage of vmi-image-booted')
    def t_create_image():
        s = seed['servers']['vmi-image-booted'][0]
        r = demo.request('POST', 'compute', '/servers/%s/action' % s['id'],
                         json_body={'createImage': {'name': 'vmi-verify-snapshot'}},
                         headers={'OpenStack-API-Version': 'compute 2.45'}, raw=True)
        iid = r.json()['image_id']
        cleanup.append(('image', iid))
        t0 = time.time()
        i = wait_status(lambda: img(iid), ('active',), 120, 'image')
        base = seed['images']['vmi-cirros']
        path = os.path.join(tmp, 'snap.img')
        md5 = download_image(demo, iid, path)
        assert i['checksum'] == base['checksum'] == md5, 'bytes differ from vmi-cirros'
        assert i['disk_format'] == 'qcow2', i['disk_format']
        wait_status(lambda: server(s['id']), ('active',), 60, 'server')
        return 'active after %.1fs, md5 %s = vmi-cirros' % (time.time() - t0, md5)
    t_create_image()

    @check('createImage of vmi-bfv (volume-backed)')
    def t_create_image_bfv():
        r = demo.request('POST', 'compute', '/servers/%s/action' % bfv['id'],
                         json_body={'createImage': {'name': 'vmi-verify-bfv-snapshot'}},
                         headers={'OpenStack-API-Version': 'compute 2.45'}, raw=True)
        iid = r.json()['image_id']
        cleanup.append(('image', iid))
        i = wait_status(lambda: img(iid), ('active',), 120, 'image')
        bdm = json.loads(i.get('block_device_mapping') or '[]')
        snaps = [b['snapshot_id'] for b in bdm if b.get('snapshot_id')]
        for sid in snaps:
            cleanup.append(('snapshot', sid))
            wait_status(lambda: snap(sid), ('available',), 60, 'snapshot')
        wait_status(lambda: server(bfv['id']), ('active',), 60, 'server')
        return 'image %s with %d volume snapshot(s)' % (iid, len(snaps))
    t_create_image_bfv()

    @check('os-stop -> SHUTOFF, os-start -> ACTIVE')
    def t_stop_start():
        s = seed['servers']['vmi-twin'][0]
        demo.post('compute', '/servers/%s/action' % s['id'], {'os-stop': None})
        t0 = time.time()
        osapi.wait_for('SHUTOFF', lambda: server(s['id'])['status'] == 'SHUTOFF'
                       and not server(s['id']).get('OS-EXT-STS:task_state'), 60, 0.5)
        t1 = time.time()
        demo.post('compute', '/servers/%s/action' % s['id'], {'os-start': None})
        osapi.wait_for('ACTIVE', lambda: server(s['id'])['status'] == 'ACTIVE'
                       and not server(s['id']).get('OS-EXT-STS:task_state'), 60, 0.5)
        return 'SHUTOFF in %.1fs, ACTIVE again in %.1fs' % (t1 - t0, time.time() - t1)
    t_stop_start()

    @check('nova-api.log records GET /os-networks')
    def t_nova_log():
        logf = os.path.join(a.state, 'logs', 'nova-api.log')
        size = os.path.getsize(logf)
        r = demo.request('GET', 'compute', '/os-networks', ok=(200,), raw=True,
                         headers={'OpenStack-API-Version': 'compute 2.1',
                                  'X-OpenStack-Nova-API-Version': '2.1'})
        r404 = demo.request('GET', 'compute', '/os-networks', ok=(404,), raw=True,
                            headers={'OpenStack-API-Version': 'compute 2.36',
                                     'X-OpenStack-Nova-API-Version': '2.36'})
        time.sleep(0.5)
        with open(logf, 'rb') as f:
            f.seek(size)
            new = f.read().decode('utf-8', 'replace')
        lines = [ln for ln in new.splitlines() if 'GET /v2.1/os-networks' in ln]
        assert any('status: 200' in ln for ln in lines), 'no 200 line: %r' % lines
        assert any('status: 404' in ln for ln in lines), 'no 404 line: %r' % lines
        return '200 (2.1) and 404 (2.36) logged: %s' % lines[0].split('] ', 1)[-1][:90]
    t_nova_log()

    # cleanup of everything this run created
    @check('cleanup')
    def t_cleanup():
        for kind, cid in reversed(cleanup):
            if kind == 'image':
                demo.delete('image', '/v2/images/%s' % cid)
        for kind, cid in reversed(cleanup):
            if kind == 'volume':
                demo.delete('volumev3', '/volumes/%s' % cid)
        for kind, cid in reversed(cleanup):
            if kind == 'snapshot':
                demo.delete('volumev3', '/snapshots/%s' % cid)
                osapi.wait_for('snapshot deleted', lambda: demo.request(
                    'GET', 'volumev3', '/snapshots/%s' % cid, ok=(200, 404), raw=True
                ).status_code == 404, 120, 0.5)
        left = [i['name'] for i in demo.get('image', '/v2/images', params={'limit': 200})['images']
                if i['name'].startswith('vmi-verify')]
        left += [v['name'] for v in demo.get('volumev3', '/volumes')['volumes']
                 if (v['name'] or '').startswith('vmi-verify')]
        assert not left, 'left over: %s' % left
        return '%d objects removed' % len(cleanup)
    t_cleanup()
    return finish(tmp)


def finish(tmp):
    subprocess.run(['rm', '-rf', tmp])
    ok = sum(1 for _, r in RESULTS if r)
    bad = len(RESULTS) - ok
    print('%d passed, %d failed' % (ok, bad))
    return 0 if bad == 0 else 1


if __name__ == '__main__':
    try:
        sys.exit(main())
    except osapi.requests.exceptions.ConnectionError as e:
        sys.exit('verify: ERROR: cannot reach the cloud (is it up? scripts/openstack-cloud status): %s' % e)
