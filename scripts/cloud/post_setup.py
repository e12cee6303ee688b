#!/usr/bin/python3
"""Post-start checks and cloud-level setup for `scripts/openstack-cloud up`.

* waits until nova-conductor/-scheduler/-compute and cinder-scheduler/-volume
  report "up" and the compute host has a Placement resource provider;
* makes sure the Cinder volume type `nfs1` (backend nfs1) exists;
* raises the demo project's Nova/Cinder quotas so tests have headroom;
* checks that Neutron and Glance answer through the catalog.
Everything is idempotent.
"""
import argparse
import sys
import time

import osapi


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--clouds', required=True)
    p.add_argument('--host', required=True)
    p.add_argument('--timeout', type=int, default=180)
    a = p.parse_args()
    t0 = time.time()

    adm = osapi.Session(a.clouds, 'vmi-admin')
    demo = osapi.Session(a.clouds, 'vmi-demo')

    def nova_up():
        svcs = adm.get('compute', '/os-services')['services']
        up = {s['binary'] for s in svcs if s['state'] == 'up' and s['status'] == 'enabled'
              and s['host'] == a.host}
        return {'nova-conductor', 'nova-scheduler', 'nova-compute'} <= up
    osapi.wait_for('nova services up', nova_up, a.timeout, 2)
    print('  nova: conductor, scheduler, compute are up')

    def rp():
        rps = adm.get('placement', '/resource_providers',
                      headers={'OpenStack-API-Version': 'placement 1.20'})['resource_providers']
        return [r for r in rps if r['name'] == a.host]
    osapi.wait_for('placement resource provider', rp, a.timeout, 2)
    print('  placement: resource provider %s present' % a.host)

    def cinder_up():
        svcs = adm.get('volumev3', '/os-services')['services']
        up = {s['binary'] for s in svcs if s['state'] == 'up' and s['status'] == 'enabled'
              and s['host'].split('@')[0] == a.host}
        return {'cinder-scheduler', 'cinder-volume'} <= up
    osapi.wait_for('cinder services up', cinder_up, a.timeout, 2)

    def pools():
        ps = adm.get('volumev3', '/scheduler-stats/get_pools', params={'detail': 'true'})['pools']
        return [x for x in ps if x['capabilities'].get('free_capacity_gb')]
    osapi.wait_for('cinder pool reported', pools, a.timeout, 2)
    print('  cinder: scheduler and volume (nfs1) are up, pool reported')

    types = adm.get('volumev3', '/types', params={'is_public': 'None'})['volume_types']
    t = [x for x in types if x['name'] == 'nfs1']
    if not t:
        t = [adm.post('volumev3', '/types', {'volume_type': {
            'name': 'nfs1', 'os-volume-type-access:is_public': True,
            'description': 'NFS driver on a local directory (rig)'}})['volume_type']]
        print('  cinder: created volume type nfs1')
    specs = adm.get('volumev3', '/types/%s/extra_specs' % t[0]['id'])['extra_specs']
    if specs.get('volume_backend_name') != 'nfs1':
        adm.post('volumev3', '/types/%s/extra_specs' % t[0]['id'],
                 {'extra_specs': {'volume_backend_name': 'nfs1'}})

    # quotas: headroom for tests and benchmarks in the demo project
    adm.put('compute', '/os-quota-sets/%s' % demo.project_id, {'quota_set': {
        'instances': 50, 'cores': 200, 'ram': 409600}})
    adm.put('volumev3', '/os-quota-sets/%s' % demo.project_id, {'quota_set': {
        'volumes': 50, 'snapshots': 50, 'gigabytes': 2000}})

    demo.get('network', '/networks', params={'limit': 1})
    demo.get('image', '/v2/images', params={'limit': 1})
    print('  neutron, glance answer; demo quotas set; checks took %.0f s' % (time.time() - t0))


if __name__ == '__main__':
    try:
        main()
    except (osapi.ApiError, osapi.requests.exceptions.RequestException) as e:
        sys.exit('post_setup: %s' % e)
