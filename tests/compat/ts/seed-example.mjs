import Cloudflare from 'cloudflare';

const client = new Cloudflare({
  apiToken: process.env['CLOUDFLARE_API_TOKEN'], // This is the default and can be omitted
});

const verifications = await client.ssl.verification.get({
  zone_id: '023e105f4ecef8ad9ca31a8372d0c353',
});

console.log(verifications);
