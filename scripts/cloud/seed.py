#!/usr/bin/python3
"""Seed the rig with the vmi-* test objects and write $VMI_CLOUD_HOME/seed.json.

Idempotent: every object is looked up first (exact name, in the demo project
unless noted) and only created when missing; a second run creates nothing and
rewrites the same seed.json.  Servers found in ERROR are deleted and rebuilt.

Objects (demo project, created as the non-admin user `demo` unless noted):
  networks  vmi-shared (admin, shared), vmi-net-a, vmi-net-b, vmi-net-c,
            vmi-dup x2 (same name); one subnet each, distinct CIDRs
  images    vmi-cirros  qcow2, 64 MiB virtual: ASCII marker at offset 0, then
                        4 MiB of SHAKE-256 bytes, rest zero; hw_firmware_type=uefi,
                        hw_disk_bus=scsi, hw_vif_model=e1000, os_distro=cirros
            vmi-data    qcow2, 1 GiB virtual: marker + 32 MiB of SHAKE-256 bytes at
                        the start, rest zero (only used to fill vmi-bfv-data)
  flavors   vmi.small (2 vCPU, 1536 MiB, 1 GiB), vmi.medium (4, 3072, 2)  [admin, public]
  volumes   vmi-bfv-data  1 GiB from vmi-data, bootable=false, attached to vmi-bfv
  servers   vmi-bfv                 boot from volume (1 GiB root volume from vmi-cirros,
                                    delete_on_termination) + vmi-bfv-data; NICs: ports
                                    vmi-bfv-port-1 (vmi-net-a), vmi-bfv-port-2 (vmi-net-b),
                                    vmi-bfv-port-3 (vmi-net-a) in that order; description
            vmi-image-booted        vmi-cirros, vmi.small, NIC on vmi-shared
            vmi-twin x2             vmi-cirros, vmi.small, NIC on vmi-net-c
            vmi-Mixed_Case.Name 01  vmi-cirros, vmi.medium, NIC on vmi-net-b

seed.json schema ("schema": "vmi-cloud-seed/1"); every name maps to what it names:
{
  "schema": "vmi-cloud-seed/1",
  "cloud": {"clouds_yaml": path, "admin_cloud": "vmi-admin", "demo_cloud": "vmi-demo",
            "auth_url": str, "region": "RegionOne",
            "demo_project_id": str, "admin_project_id": str},
  "networks": {NAME: [NETWORK_ID, ...]},          # a list: vmi-dup has two ids
  "subnets":  {NETWORK_ID: {"id": str, "name": str, "cidr": str}},
  "images": {
    "vmi-cirros": {"id", "disk_format": "qcow2", "virtual_size": 67108864,
                   "raw_sha256": sha256 of the whole raw expansion (virtual_size bytes),
                   "checksum": glance md5 of the qcow2 file, "size": qcow2 file size,
                   "marker": ASCII marker at offset 0, "properties": {...}},
    "vmi-data":   {"id", "disk_format": "qcow2", "virtual_size": 1073741824,
                   "data_bytes": N (64 MiB), "data_sha256": sha256 of the first N raw bytes,
                   "checksum", "size", "marker"}},
  "image_ids": {NAME: ID},
  "flavors": {NAME: {"id", "vcpus", "ram", "disk"}},
  "flavor_ids": {NAME: ID},
  "volumes": {"vmi-bfv-data": {"id", "size", "bootable": false, "source_image_id",
                               "data_bytes", "data_sha256"}},
  "servers": {NAME: [                              # a list: vmi-twin has two
      {"id", "name", "status", "flavor": NAME, "flavor_id", "boot": "image"|"volume",
       "image_id": ID or null, "description": str or null,
       "nics": [{"port_id", "mac", "network_id", "network_name", "fixed_ips": [...]}],
                                                   # in creation (= request) order
       "volumes": [{"id", "name", "root": bool, "device", "delete_on_termination"}]}]},
  "expected": {"dup_network_count": 2}
}
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import osapi

MiB = 1024 * 1024
GiB = 1024 * MiB

CIRROS = {'name': 'vmi-cirros', 'virtual_size': 64 * MiB, 'random_bytes': 4 * MiB,
          'marker': b'VMI-CIRROS-SEED-v1\n', 'seed': b'vmi-cirros-seed-v1'}
DATA = {'name': 'vmi-data', 'virtual_size': 1 * GiB, 'random_bytes': 32 * MiB,
        'marker': b'VMI-DATA-SEED-v1\n', 'seed': b'vmi-data-seed-v1', 'hash_bytes': 64 * MiB}
CIRROS_PROPS = {'hw_firmware_type': 'uefi', 'hw_disk_bus': 'scsi',
                'hw_vif_model': 'e1000', 'os_distro': 'cirros', 'os_type': 'linux'}
FLAVORS = [('vmi.small', 2, 1536, 1), ('vmi.medium', 4, 3072, 2)]
NETWORKS = [  # name, owner, shared, cidrs (one per network of that name)
    ('vmi-shared', 'admin', True, ['10.60.0.0/24']),
    ('vmi-net-a', 'demo', False, ['10.61.0.0/24']),
    ('vmi-net-b', 'demo', False, ['10.62.0.0/24']),
    ('vmi-net-c', 'demo', False, ['10.63.0.0/24']),
    ('vmi-dup', 'demo', False, ['10.64.0.0/24', '10.65.0.0/24']),
]
BFV_DESCRIPTION = 'Boot-from-volume test server'
IMAGE_SERVERS = [  # name, count, network, flavor
    ('vmi-image-booted', 1, 'vmi-shared', 'vmi.small'),
    ('vmi-twin', 2, 'vmi-net-c', 'vmi.small'),
    ('vmi-Mixed_Case.Name 01', 1, 'vmi-net-b', 'vmi.medium'),
]


def say(msg):
    print('  seed: ' + msg, flush=True)


# ------------------------------------------------------------------ image files
def raw_content(spec):
    """marker + SHAKE-256 stream, total spec['random_bytes'] bytes (rest is zero)."""
    stream = hashlib.shake_256(spec['seed']).digest(spec['random_bytes'])
    m = spec['marker']
    return m + stream[len(m):]


def build_image(spec, cache):
    """Write the raw expansion (sparse) and its qcow2; return facts about them."""
    os.makedirs(cache, exist_ok=True)
    raw = os.path.join(cache, spec['name'] + '.raw')
    qcow = os.path.join(cache, spec['name'] + '.qcow2')
    head = raw_content(spec)
    hash_len = spec.get('hash_bytes', spec['virtual_size'])
    h = hashlib.sha256(head)
    zeros = bytes(MiB)
    left = hash_len - len(head)
    while left > 0:
        n = min(left, MiB)
        h.update(zeros[:n])
        left -= n
    facts = {'virtual_size': spec['virtual_size'], 'sha256': h.hexdigest(),
             'hash_bytes': hash_len, 'marker': spec['marker'].decode().strip()}
    stamp = os.path.join(cache, spec['name'] + '.sha256')
    if not (os.path.exists(qcow) and os.path.exists(stamp)
            and open(stamp).read().strip() == facts['sha256']):
        with open(raw, 'wb') as f:
            f.write(head)
            f.truncate(spec['virtual_size'])
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, qcow + '.tmp'],
                       check=True)
        os.replace(qcow + '.tmp', qcow)
        os.unlink(raw)
        with open(stamp, 'w') as f:
            f.write(facts['sha256'] + '\n')
    md5 = hashlib.md5()
    with open(qcow, 'rb') as f:
        for chunk in iter(lambda: f.read(4 * MiB), b''):
            md5.update(chunk)
    facts.update(path=qcow, md5=md5.hexdigest(), size=os.path.getsize(qcow))
    return facts


# ------------------------------------------------------------------ helpers
def exact(items, name):
    return [x for x in items if x.get('name') == name]


def ensure_image(demo, spec, facts, props):
    imgs = demo.get('image', '/v2/images', params={'name': spec['name'], 'owner': demo.project_id,
                                                    'limit': 100})['images']
    for i in imgs:
        if i['status'] in ('queued', 'saving', 'killed', 'deleted'):
            say('deleting broken image %s (%s)' % (i['id'], i['status']))
            demo.delete('image', '/v2/images/%s' % i['id'])
    good = [i for i in imgs if i['status'] == 'active']
    if good:
        good.sort(key=lambda i: (i.get('checksum') != facts['md5'], i['created_at']))
        if good[0].get('checksum') != facts['md5']:
            say('WARNING: %s %s has checksum %s, the local build has %s (kept)' % (
                spec['name'], good[0]['id'], good[0].get('checksum'), facts['md5']))
        return good[0]
    body = {'name': spec['name'], 'disk_format': 'qcow2', 'container_format': 'bare'}
    body.update(props)
    img = demo.post('image', '/v2/images', body, ok=(201,))
    with open(facts['path'], 'rb') as f:
        demo.request('PUT', 'image', '/v2/images/%s/file' % img['id'], data=f,
                     headers={'Content-Type': 'application/octet-stream'}, ok=(204,))
    img = demo.get('image', '/v2/images/%s' % img['id'])
    if img['status'] != 'active' or img['checksum'] != facts['md5']:
        raise osapi.ApiError('image %s upload: status %s checksum %s' % (
            spec['name'], img['status'], img.get('checksum')))
    say('uploaded image %s (%s, %d bytes)' % (spec['name'], img['id'], facts['size']))
    return img


def ensure_flavors(adm):
    out = {}
    existing = adm.get('compute', '/flavors/detail', params={'is_public': 'None'})['flavors']
    for name, vcpus, ram, disk in FLAVORS:
        f = exact(existing, name)
        if f:
            f = f[0]
            if (f['vcpus'], f['ram'], f['disk']) != (vcpus, ram, disk):
                raise osapi.ApiError('flavor %s exists with other sizes: %s' % (name, f))
        else:
            f = adm.post('compute', '/flavors', {'flavor': {
                'name': name, 'vcpus': vcpus, 'ram': ram, 'disk': disk,
                'os-flavor-access:is_public': True}})['flavor']
            say('created flavor %s' % name)
        out[name] = {'id': f['id'], 'vcpus': vcpus, 'ram': ram, 'disk': disk}
    return out


def ensure_networks(adm, demo):
    nets, subnets = {}, {}
    for name, owner, shared, cidrs in NETWORKS:
        sess = adm if owner == 'admin' else demo
        found = [n for n in sess.get('network', '/networks', params={
            'name': name, 'project_id': sess.project_id})['networks']]
        found.sort(key=lambda n: (n.get('created_at') or '', n['id']))
        while len(found) < len(cidrs):
            body = {'name': name}
            if shared:
                body['shared'] = True
            n = sess.post('network', '/networks', {'network': body})['network']
            say('created network %s (%s)' % (name, n['id']))
            found.append(n)
        # a stable order across runs (created_at has one-second resolution)
        found = sorted(found, key=lambda n: (n.get('created_at') or '', n['id']))[:len(cidrs)]
        # one subnet per network; CIDRs assigned so that they stay distinct
        used = {}
        have = {}
        for n in found:
            subs = sess.get('network', '/subnets', params={'network_id': n['id']})['subnets']
            if subs:
                have[n['id']] = subs[0]
                used[subs[0]['cidr']] = n['id']
        free = [c for c in cidrs if c not in used]
        for n in found:
            if n['id'] not in have:
                cidr = free.pop(0)
                s = sess.post('network', '/subnets', {'subnet': {
                    'name': name + '-subnet', 'network_id': n['id'], 'ip_version': 4,
                    'cidr': cidr}})['subnet']
                say('created subnet %s %s' % (s['name'], cidr))
                have[n['id']] = s
            s = have[n['id']]
            subnets[n['id']] = {'id': s['id'], 'name': s['name'], 'cidr': s['cidr']}
        nets[name] = [n['id'] for n in found]
    return nets, subnets


def wait_volume(demo, vid, want=('available',), timeout=300):
    def check():
        v = demo.get('volumev3', '/volumes/%s' % vid)['volume']
        if v['status'] in want:
            return v
        if v['status'].startswith('error'):
            raise osapi.ApiError('volume %s went to %s' % (vid, v['status']))
        return None
    return osapi.wait_for('volume %s %s' % (vid, '/'.join(want)), check, timeout, 1)


def list_servers(demo):
    return demo.get('compute', '/servers/detail', params={'name': '^vmi-'},
                    headers={'OpenStack-API-Version': 'compute 2.79'})['servers']


def drop_error_servers(demo, servers, name):
    keep = []
    for s in exact(servers, name):
        if s['status'] == 'ERROR':
            say('deleting server %s %s in ERROR (%s)' % (name, s['id'], s.get('fault')))
            demo.delete('compute', '/servers/%s' % s['id'])
            osapi.wait_for('server %s deleted' % s['id'], lambda: demo.request(
                'GET', 'compute', '/servers/%s' % s['id'], ok=(200, 404),
                raw=True).status_code == 404, 120, 1)
        else:
            keep.append(s)
    return keep


def ensure_port(demo, name, net_id):
    ports = demo.get('network', '/ports', params={'name': name})['ports']
    for p in ports:
        if p['network_id'] == net_id:
            return p
    p = demo.post('network', '/ports', {'port': {'name': name, 'network_id': net_id}})['port']
    say('created port %s (%s)' % (name, p['id']))
    return p


def ensure_bfv(demo, images, flavors, nets, servers):
    name = 'vmi-bfv'
    existing = drop_error_servers(demo, servers, name)
    # data volume with known bytes, not bootable
    vols = exact(demo.get('volumev3', '/volumes/detail', params={'name': 'vmi-bfv-data'})['volumes'],
                 'vmi-bfv-data')
    vols = [v for v in vols if not v['status'].startswith('error')]
    if vols:
        vol = vols[0]
    else:
        vol = demo.post('volumev3', '/volumes', {'volume': {
            'name': 'vmi-bfv-data', 'size': 1, 'imageRef': images['vmi-data']['id'],
            'description': 'data volume of vmi-bfv (known bytes from vmi-data)'}})['volume']
        say('creating volume vmi-bfv-data (%s) from image vmi-data' % vol['id'])
    vol = wait_volume(demo, vol['id'], ('available', 'in-use', 'reserved', 'attaching'))
    if vol.get('bootable') == 'true':
        demo.post('volumev3', '/volumes/%s/action' % vol['id'],
                  {'os-set_bootable': {'bootable': False}})
        say('marked vmi-bfv-data not bootable')
    if existing:
        server = existing[0]
        port_ids = None
    else:
        ports = [ensure_port(demo, 'vmi-bfv-port-1', nets['vmi-net-a'][0]),
                 ensure_port(demo, 'vmi-bfv-port-2', nets['vmi-net-b'][0]),
                 ensure_port(demo, 'vmi-bfv-port-3', nets['vmi-net-a'][0])]
        for p in ports:
            if p.get('device_id'):
                raise osapi.ApiError('port %s is bound to %s' % (p['name'], p['device_id']))
        port_ids = [p['id'] for p in ports]
        server = demo.post('compute', '/servers', {'server': {
            'name': name, 'flavorRef': flavors['vmi.small']['id'],
            'description': BFV_DESCRIPTION,
            'networks': [{'port': pid} for pid in port_ids],
            'block_device_mapping_v2': [
                {'boot_index': 0, 'uuid': images['vmi-cirros']['id'], 'source_type': 'image',
                 'destination_type': 'volume', 'volume_size': 1,
                 'delete_on_termination': True},
                {'boot_index': -1, 'uuid': vol['id'], 'source_type': 'volume',
                 'destination_type': 'volume', 'delete_on_termination': False}]}},
            headers={'OpenStack-API-Version': 'compute 2.79'})['server']
        say('booting %s (%s) from volume' % (name, server['id']))
    return server, vol


def ensure_image_servers(demo, images, flavors, nets, servers):
    created = []
    for name, count, net, flavor in IMAGE_SERVERS:
        have = drop_error_servers(demo, servers, name)
        for _ in range(count - len(have)):
            s = demo.post('compute', '/servers', {'server': {
                'name': name, 'flavorRef': flavors[flavor]['id'],
                'imageRef': images['vmi-cirros']['id'],
                'networks': [{'uuid': nets[net][0]}]}})['server']
            say('booting %s (%s) from image' % (name, s['id']))
            created.append(s['id'])
    return created


def wait_active(demo, server_ids, timeout=600):
    def check():
        ss = {s['id']: s for s in list_servers(demo)}
        pending = []
        for sid in server_ids:
            s = ss.get(sid)
            if s is None:
                raise osapi.ApiError('server %s vanished' % sid)
            if s['status'] == 'ERROR':
                raise osapi.ApiError('server %s (%s) went to ERROR: %s' % (
                    s['name'], sid, s.get('fault')))
            if s['status'] == 'SHUTOFF' and not s.get('OS-EXT-STS:task_state'):
                # Imports stop the servers they export: seed brings them back.
                say('starting %s (%s), stopped since the last seed' % (s['name'], sid))
                demo.post('compute', '/servers/%s/action' % sid, {'os-start': None},
                          ok=(202, 409))
            if s['status'] != 'ACTIVE' or s.get('OS-EXT-STS:task_state'):
                pending.append(sid)
        return not pending
    osapi.wait_for('servers ACTIVE', check, timeout, 2)


def describe_server(adm, demo, s, flavors, nets, bfv_port_order):
    netname = {nid: name for name, ids in nets.items() for nid in ids}
    flavor_name = s['flavor'].get('original_name')
    ports = demo.get('network', '/ports', params={'device_id': s['id']})['ports']
    if bfv_port_order:
        order = {pid: i for i, pid in enumerate(bfv_port_order)}
        ports.sort(key=lambda p: order.get(p['id'], 99))
    nics = [{'port_id': p['id'], 'mac': p['mac_address'], 'network_id': p['network_id'],
             'network_name': netname.get(p['network_id']),
             'fixed_ips': [ip['ip_address'] for ip in p['fixed_ips']]} for p in ports]
    atts = demo.get('compute', '/servers/%s/os-volume_attachments' % s['id'],
                    headers={'OpenStack-API-Version': 'compute 2.79'})['volumeAttachments']
    # root_device_name is admin-only: ask as admin
    root_dev = adm.get('compute', '/servers/%s' % s['id'])['server'].get(
        'OS-EXT-SRV-ATTR:root_device_name')
    vols = []
    for a in atts:
        v = demo.get('volumev3', '/volumes/%s' % a['volumeId'])['volume']
        vols.append({'id': a['volumeId'], 'name': v.get('name') or None, 'device': a['device'],
                     'root': bool(not s.get('image') and a['device'] == root_dev),
                     'delete_on_termination': a.get('delete_on_termination'),
                     'bootable': v.get('bootable') == 'true', 'status': v['status']})
    vols.sort(key=lambda v: (not v['root'], v['device']))
    image = s.get('image')
    return {'id': s['id'], 'name': s['name'], 'status': s['status'],
            'flavor': flavor_name, 'flavor_id': flavors.get(flavor_name, {}).get('id'),
            'boot': 'image' if image else 'volume',
            'image_id': image['id'] if image else None,
            'description': s.get('description'),
            'nics': nics, 'volumes': vols}


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--state', required=True)
    a = p.parse_args()
    t0 = time.time()
    clouds = os.path.join(a.state, 'clouds.yaml')
    adm = osapi.Session(clouds, 'vmi-admin')
    demo = osapi.Session(clouds, 'vmi-demo')
    cache = os.path.join(a.state, 'seed-cache')

    cir = build_image(CIRROS, cache)
    dat = build_image(DATA, cache)
    img_c = ensure_image(demo, CIRROS, cir, CIRROS_PROPS)
    img_d = ensure_image(demo, DATA, dat, {'os_type': 'linux'})
    images = {'vmi-cirros': img_c, 'vmi-data': img_d}
    flavors = ensure_flavors(adm)
    nets, subnets = ensure_networks(adm, demo)

    servers = list_servers(demo)
    bfv, vol = ensure_bfv(demo, images, flavors, nets, servers)
    ensure_image_servers(demo, images, flavors, nets, servers)
    all_ids = [s['id'] for s in list_servers(demo)
               if s['name'] in ('vmi-bfv',) + tuple(n for n, *_ in IMAGE_SERVERS)]
    wait_active(demo, all_ids)
    # the data volume: attach when the server exists without it (recreated volume)
    atts = demo.get('compute', '/servers/%s/os-volume_attachments' % bfv['id'])['volumeAttachments']
    if vol['id'] not in [x['volumeId'] for x in atts]:
        demo.post('compute', '/servers/%s/os-volume_attachments' % bfv['id'],
                  {'volumeAttachment': {'volumeId': vol['id']}})
        say('attaching vmi-bfv-data to vmi-bfv')
    wait_volume(demo, vol['id'], ('in-use',))
    say('all servers ACTIVE, vmi-bfv-data in-use')

    bfv_ports = [p['id'] for n in ('vmi-bfv-port-1', 'vmi-bfv-port-2', 'vmi-bfv-port-3')
                 for p in demo.get('network', '/ports', params={'name': n,
                                                                'device_id': bfv['id']})['ports']]
    out_servers = {}
    for s in sorted(list_servers(demo), key=lambda s: (s['name'], s['created'], s['id'])):
        if s['id'] not in all_ids:
            continue
        d = describe_server(adm, demo, s, flavors, nets, bfv_ports if s['id'] == bfv['id'] else None)
        out_servers.setdefault(s['name'], []).append(d)
    for name, cnt in [('vmi-bfv', 1)] + [(n, c) for n, c, *_ in IMAGE_SERVERS]:
        got = len(out_servers.get(name, []))
        if got != cnt:
            raise osapi.ApiError('expected %d server(s) named %r, found %d' % (cnt, name, got))
    for d in out_servers.values():
        for s in d:
            if s['volumes'] and any(v['status'] != 'in-use' for v in s['volumes']):
                raise osapi.ApiError('server %s has volumes not in-use' % s['name'])

    vol = demo.get('volumev3', '/volumes/%s' % vol['id'])['volume']
    seed = {
        'schema': 'vmi-cloud-seed/1',
        'cloud': {'clouds_yaml': clouds, 'admin_cloud': 'vmi-admin', 'demo_cloud': 'vmi-demo',
                  'auth_url': demo.auth['auth_url'], 'region': demo.region,
                  'demo_project_id': demo.project_id, 'admin_project_id': adm.project_id},
        'networks': nets,
        'subnets': subnets,
        'images': {
            'vmi-cirros': {'id': img_c['id'], 'disk_format': 'qcow2',
                           'virtual_size': cir['virtual_size'], 'raw_sha256': cir['sha256'],
                           'checksum': img_c['checksum'], 'size': img_c['size'],
                           'marker': cir['marker'],
                           'properties': {k: img_c.get(k) for k in CIRROS_PROPS}},
            'vmi-data': {'id': img_d['id'], 'disk_format': 'qcow2',
                         'virtual_size': dat['virtual_size'], 'data_bytes': dat['hash_bytes'],
                         'data_sha256': dat['sha256'], 'checksum': img_d['checksum'],
                         'size': img_d['size'], 'marker': dat['marker']},
        },
        'image_ids': {'vmi-cirros': img_c['id'], 'vmi-data': img_d['id']},
        'flavors': flavors,
        'flavor_ids': {k: v['id'] for k, v in flavors.items()},
        'volumes': {'vmi-bfv-data': {
            'id': vol['id'], 'size': vol['size'], 'bootable': vol['bootable'] == 'true',
            'source_image_id': img_d['id'], 'data_bytes': dat['hash_bytes'],
            'data_sha256': dat['sha256']}},
        'servers': out_servers,
        'expected': {'dup_network_count': len(nets['vmi-dup'])},
    }
    path = os.path.join(a.state, 'seed.json')
    with open(path + '.tmp', 'w') as f:
        json.dump(seed, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(path + '.tmp', path)
    say('wrote %s (%d servers, %d networks) in %.0f s' % (
        path, sum(len(v) for v in out_servers.values()),
        sum(len(v) for v in nets.values()), time.time() - t0))


if __name__ == '__main__':
    try:
        main()
    except (osapi.ApiError, subprocess.CalledProcessError) as e:
        sys.exit('seed: ERROR: %s' % e)
    except osapi.requests.exceptions.ConnectionError as e:
        sys.exit('seed: ERROR: cannot reach the cloud (is it up? scripts/openstack-cloud status): %s' % e)
