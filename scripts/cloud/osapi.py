"""Minimal OpenStack REST client for the rig scripts (plain HTTP via requests).

Reads the rig's clouds.yaml, gets a Keystone v3 token, resolves public
endpoints from the token's catalog, and offers JSON helpers plus polling.
"""
import json
import time

import requests
import yaml

TIMEOUT = 60


class ApiError(Exception):
    pass


class Session:
    def __init__(self, clouds_yaml, cloud):
        with open(clouds_yaml) as f:
            c = yaml.safe_load(f)['clouds'][cloud]
        self.cloud = cloud
        self.auth = c['auth']
        self.region = c.get('region_name', 'RegionOne')
        self.interface = c.get('interface', 'public')
        self.http = requests.Session()
        self.login()

    def login(self):
        a = self.auth
        body = {'auth': {
            'identity': {'methods': ['password'], 'password': {'user': {
                'name': a['username'], 'password': a['password'],
                'domain': {'name': a['user_domain_name']}}}},
            'scope': {'project': {'name': a['project_name'],
                                  'domain': {'name': a['project_domain_name']}}}}}
        url = a['auth_url'].rstrip('/') + '/auth/tokens'
        r = self.http.post(url, json=body, timeout=TIMEOUT)
        if r.status_code != 201:
            raise ApiError('login %s failed: %s %s' % (self.cloud, r.status_code, r.text[:300]))
        self.token = r.headers['X-Subject-Token']
        tok = r.json()['token']
        self.project_id = tok['project']['id']
        self.user_id = tok['user']['id']
        self.catalog = {}
        for svc in tok.get('catalog', []):
            for ep in svc['endpoints']:
                if ep['interface'] == self.interface and ep.get('region_id', ep.get('region')) == self.region:
                    self.catalog[svc['type']] = ep['url'].rstrip('/')
        self.http.headers['X-Auth-Token'] = self.token

    def url(self, service, path):
        base = self.catalog[service]
        if service == 'network' and not base.endswith('/v2.0'):
            base += '/v2.0'
        return base + path

    def request(self, method, service, path, ok=(200, 201, 202, 204), headers=None,
                json_body=None, data=None, params=None, stream=False, raw=False):
        h = dict(headers or {})
        if service == 'compute':
            h.setdefault('OpenStack-API-Version', 'compute 2.79')
            h.setdefault('X-OpenStack-Nova-API-Version', '2.79')
        if service == 'volumev3':
            h.setdefault('OpenStack-API-Version', 'volume 3.62')
        for attempt in range(2):
            r = self.http.request(method, self.url(service, path), headers=h,
                                  json=json_body, data=data, params=params,
                                  timeout=TIMEOUT, stream=stream)
            if r.status_code == 401 and attempt == 0:
                self.login()
                continue
            break
        if r.status_code not in ok:
            raise ApiError('%s %s %s -> %s %s' % (method, service, path, r.status_code,
                                                  r.text[:500]))
        if raw or stream:
            return r
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            return r.text

    def get(self, service, path, **kw):
        return self.request('GET', service, path, **kw)

    def post(self, service, path, body=None, **kw):
        return self.request('POST', service, path, json_body=body, **kw)

    def put(self, service, path, body=None, **kw):
        return self.request('PUT', service, path, json_body=body, **kw)

    def delete(self, service, path, **kw):
        kw.setdefault('ok', (200, 202, 204, 404))
        return self.request('DELETE', service, path, **kw)


def wait_for(what, fn, timeout=300, interval=1.0):
    """Poll fn() until it returns a truthy value; fn may raise to abort."""
    t0 = time.time()
    last = None
    while True:
        v = fn()
        if v:
            return v
        if time.time() - t0 > timeout:
            raise ApiError('timed out after %ds waiting for %s (last: %s)' % (timeout, what, last))
        time.sleep(interval)


def dump(obj):
    return json.dumps(obj, indent=2, sort_keys=True)
