#!/usr/bin/python3
"""Idempotent Keystone bootstrap for the rig: projects, roles, users, catalog.

Runs after `keystone-manage bootstrap` (which creates the admin user/project,
the admin/member/reader roles, region RegionOne and the identity endpoints).
Everything here is find-or-create; a service user's password is only reset
when logging in with it fails (a reset revokes the user's tokens, which
running services hold).

Usage: keystone_setup.py CONFIG.json   (written by scripts/openstack-cloud)
"""
import json
import sys

import requests

KS = None
TIMEOUT = 30


def die(msg):
    sys.exit('keystone_setup: ' + msg)


def token_for(user, password, project, domain='Default'):
    body = {'auth': {
        'identity': {'methods': ['password'], 'password': {'user': {
            'name': user, 'domain': {'name': domain}, 'password': password}}},
        'scope': {'project': {'name': project, 'domain': {'name': domain}}}}}
    r = requests.post(KS + '/v3/auth/tokens', json=body, timeout=TIMEOUT)
    if r.status_code == 201:
        return r.headers['X-Subject-Token']
    return None


class Api:
    def __init__(self, token):
        self.h = {'X-Auth-Token': token}

    def get(self, path, **params):
        r = requests.get(KS + path, headers=self.h, params=params,
                         timeout=TIMEOUT)
        if r.status_code != 200:
            die('GET %s -> %s %s' % (path, r.status_code, r.text[:300]))
        return r.json()

    def post(self, path, body):
        r = requests.post(KS + path, headers=self.h, json=body,
                          timeout=TIMEOUT)
        if r.status_code not in (200, 201, 204):
            die('POST %s -> %s %s' % (path, r.status_code, r.text[:300]))
        return r.json() if r.content else None

    def patch(self, path, body):
        r = requests.patch(KS + path, headers=self.h, json=body,
                           timeout=TIMEOUT)
        if r.status_code != 200:
            die('PATCH %s -> %s %s' % (path, r.status_code, r.text[:300]))
        return r.json()

    def put(self, path):
        r = requests.put(KS + path, headers=self.h, timeout=TIMEOUT)
        if r.status_code not in (200, 201, 204):
            die('PUT %s -> %s %s' % (path, r.status_code, r.text[:300]))


def main():
    global KS
    cfg = json.load(open(sys.argv[1]))
    KS = cfg['keystone_url'].rstrip('/')
    region = cfg['region']
    tok = token_for('admin', cfg['admin_password'], 'admin')
    if not tok:
        die('cannot log in as admin')
    api = Api(tok)
    domain_id = 'default'

    def ensure_project(name, desc):
        found = api.get('/v3/projects', name=name, domain_id=domain_id)['projects']
        if found:
            return found[0]['id']
        print('  create project %s' % name)
        return api.post('/v3/projects', {'project': {
            'name': name, 'domain_id': domain_id, 'description': desc,
            'enabled': True}})['project']['id']

    def ensure_role(name):
        found = api.get('/v3/roles', name=name)['roles']
        if found:
            return found[0]['id']
        print('  create role %s' % name)
        return api.post('/v3/roles', {'role': {'name': name}})['role']['id']

    def ensure_user(name, password, project, project_id):
        found = api.get('/v3/users', name=name, domain_id=domain_id)['users']
        if not found:
            print('  create user %s' % name)
            return api.post('/v3/users', {'user': {
                'name': name, 'domain_id': domain_id, 'password': password,
                'enabled': True, 'default_project_id': project_id}})['user']['id']
        uid = found[0]['id']
        return uid

    def check_password(name, password, project, uid):
        if token_for(name, password, project):
            return
        print('  reset password of user %s (login failed)' % name)
        api.patch('/v3/users/%s' % uid, {'user': {'password': password,
                                                   'enabled': True}})
        if not token_for(name, password, project):
            die('user %s still cannot log in' % name)

    def grant(project_id, user_id, role_id):
        api.put('/v3/projects/%s/users/%s/roles/%s' % (project_id, user_id, role_id))

    roles = {r: ensure_role(r) for r in ('admin', 'member', 'reader', 'service')}
    service_pid = ensure_project('service', 'Service users of the rig')
    demo_pid = ensure_project('demo', 'Demo project of the rig')

    for u in cfg['service_users']:
        uid = ensure_user(u['name'], u['password'], 'service', service_pid)
        grant(service_pid, uid, roles['admin'])
        grant(service_pid, uid, roles['service'])
        check_password(u['name'], u['password'], 'service', uid)

    d = cfg['demo']
    uid = ensure_user(d['user'], d['password'], d['project'], demo_pid)
    grant(demo_pid, uid, roles['member'])
    grant(demo_pid, uid, roles['reader'])
    check_password(d['user'], d['password'], d['project'], uid)

    # catalog
    services = api.get('/v3/services')['services']
    endpoints = api.get('/v3/endpoints')['endpoints']
    for s in cfg['catalog']:
        svc = [x for x in services if x['type'] == s['type']]
        if svc:
            sid = svc[0]['id']
            if svc[0].get('name') != s['name']:
                api.patch('/v3/services/%s' % sid, {'service': {'name': s['name']}})
        else:
            print('  create service %s (%s)' % (s['name'], s['type']))
            sid = api.post('/v3/services', {'service': {
                'name': s['name'], 'type': s['type'], 'enabled': True,
                'description': s.get('description', s['name'])}})['service']['id']
        for iface in ('public', 'internal', 'admin'):
            eps = [e for e in endpoints if e['service_id'] == sid and
                   e['interface'] == iface and e.get('region_id') == region]
            if not eps:
                print('  create %s endpoint %s %s' % (iface, s['type'], s['url']))
                api.post('/v3/endpoints', {'endpoint': {
                    'service_id': sid, 'interface': iface, 'url': s['url'],
                    'region_id': region, 'enabled': True}})
            else:
                for e in eps[1:]:
                    requests.delete(KS + '/v3/endpoints/%s' % e['id'],
                                    headers=api.h, timeout=TIMEOUT)
                if eps[0]['url'] != s['url']:
                    print('  fix %s endpoint %s -> %s' % (iface, s['type'], s['url']))
                    api.patch('/v3/endpoints/%s' % eps[0]['id'],
                              {'endpoint': {'url': s['url']}})
    # Extra regions for tests: the same services, some at other addresses (e.g. Glance behind
    # a proxy the tests start, to cut downloads mid-way).
    regions = [r['id'] for r in api.get('/v3/regions')['regions']]
    endpoints = api.get('/v3/endpoints')['endpoints']
    services = api.get('/v3/services')['services']
    for extra in cfg.get('extra_regions', []):
        rid = extra['region']
        if rid not in regions:
            print('  create region %s' % rid)
            api.post('/v3/regions', {'region': {'id': rid, 'description': extra.get('description', '')}})
        for s in cfg['catalog']:
            sid = [x for x in services if x['type'] == s['type']][0]['id']
            url = extra.get('overrides', {}).get(s['type'], s['url'])
            for iface in ('public', 'internal', 'admin'):
                eps = [e for e in endpoints if e['service_id'] == sid and
                       e['interface'] == iface and e.get('region_id') == rid]
                if not eps:
                    api.post('/v3/endpoints', {'endpoint': {
                        'service_id': sid, 'interface': iface, 'url': url,
                        'region_id': rid, 'enabled': True}})
                elif eps[0]['url'] != url:
                    api.patch('/v3/endpoints/%s' % eps[0]['id'], {'endpoint': {'url': url}})
    print('  keystone: projects, users, roles and catalog in place')


if __name__ == '__main__':
    main()
