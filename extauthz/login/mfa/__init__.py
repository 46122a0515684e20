"""Second factors: factor records and their stores, the factor kinds (one-time codes,
recovery codes, passkeys), pending logins, the second-step, enrolment
and step-up rules. No HTTP framework here (the aiohttp adapter is
:mod:`extauthz.login.mfa.http`). docs/authentication.md, 'Second factors and step-up'."""
