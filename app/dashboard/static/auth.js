// Tokens from POST /login, kept in sessionStorage (per tab, gone when the tab closes), with
// refresh through POST /refresh (rotating: each refresh token works once).

const AUTH_KEY = "watchpost.auth";

export const auth = {
  tokens: null, // {access_token, refresh_token, expires_at (ms)}
  refreshing: null,

  load() {
    try {
      this.tokens = JSON.parse(sessionStorage.getItem(AUTH_KEY) || "null");
    } catch {
      this.tokens = null;
    }
    return this.tokens;
  },

  store(body) {
    const expiresIn = Number(body.expires_in) || 900;
    this.tokens = {
      access_token: body.access_token,
      refresh_token: body.refresh_token ?? this.tokens?.refresh_token ?? null,
      expires_at: Date.now() + expiresIn * 1000,
    };
    sessionStorage.setItem(AUTH_KEY, JSON.stringify(this.tokens));
  },

  clear() {
    this.tokens = null;
    sessionStorage.removeItem(AUTH_KEY);
  },

  async login(username, password) {
    const res = await fetch("/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      throw new Error(body.msg || body.detail || body.error || `login failed (HTTP ${res.status})`);
    }
    this.store(body);
  },

  /** Exchanges the refresh token for a new access token; null when the session is over. */
  refresh() {
    if (!this.tokens?.refresh_token) return Promise.resolve(null);
    if (!this.refreshing) {
      this.refreshing = (async () => {
        try {
          const post = () =>
            fetch("/refresh", {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ refresh_token: this.tokens.refresh_token }),
            });
          let res = await post();
          if (res.status === 429) {
            // Rate limited: wait as told (bounded) and try once more before giving up.
            const body = await res.json().catch(() => ({}));
            await new Promise((r) => setTimeout(r, Math.min(Number(body.retry_after_ms) || 1000, 5000)));
            if (!this.tokens) return null;
            res = await post();
          }
          if (!res.ok) {
            if (res.status === 400 || res.status === 401 || res.status === 403) this.clear();
            return null;
          }
          this.store(await res.json());
          return this.tokens.access_token;
        } catch {
          return null; // network down: the reconnect loop tries again later
        } finally {
          this.refreshing = null;
        }
      })();
    }
    return this.refreshing;
  },

  /** The token to connect with, refreshed first when it is about to expire. */
  async accessToken() {
    if (!this.tokens) return null;
    if (this.tokens.expires_at - Date.now() < 15000 && this.tokens.refresh_token) {
      const fresh = await this.refresh();
      if (fresh) return fresh;
      if (!this.tokens) return null;
    }
    return this.tokens.access_token;
  },

  async logout() {
    const refresh = this.tokens?.refresh_token;
    this.clear();
    if (refresh) {
      await fetch("/logout", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: refresh }),
      }).catch(() => {});
    }
  },
};
